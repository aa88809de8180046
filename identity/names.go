package identity

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The character sets below are the contract for every name and principal
// that reaches a certificate, a file mbot writes, the audit log or a
// terminal. They are checked where a value enters (resource load, mbot
// apply, the join request) and again where it is signed.

// MaxNameLen bounds resource, join token, output and method names, like a DNS label.
const MaxNameLen = 63

// MaxLoginLen bounds SSH logins and database users (Linux's useradd limit).
const MaxLoginLen = 32

// CheckName checks a resource, join token, output or method name: 1 to 63
// characters of lower-case letters, digits, '-', '_' and '.', starting and
// ending with a letter or digit. what names the field in the message.
func CheckName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%s %s is %d characters long; names have at most %d", what, Quote(Truncate(name, 40)), len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0 && i < len(name)-1:
		default:
			return fmt.Errorf("%s %s is not a valid name: use lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit (at most %d characters)",
				what, Quote(name), MaxNameLen)
		}
	}
	return nil
}

// CheckLogin checks an SSH login (principal) or database user against the
// POSIX portable user name: letters, digits, '.', '_' and '-', not starting
// with '-', at most 32 characters, with an optional trailing '$' (Samba
// machine accounts). Whitespace, ',', '*' and control characters, which
// would change the meaning of a principal list or an ssh_config line, are
// never accepted.
func CheckLogin(what, login string) error {
	if login == "" {
		return fmt.Errorf("%s is empty", what)
	}
	body := strings.TrimSuffix(login, "$")
	ok := body != "" && len(login) <= MaxLoginLen && body[0] != '-'
	for i := 0; ok && i < len(body); i++ {
		c := body[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%s %s is not a valid user name: use letters, digits, '.', '_' and '-', not starting with '-', at most %d characters (POSIX user names)",
			what, Quote(Truncate(login, 64)), MaxLoginLen)
	}
	return nil
}

// CheckHostPattern checks an OpenSSH host pattern as written into
// known_hosts and ssh_config: letters, digits, '.', '-', '_', ':' and the
// wildcards '*' and '?', at most 253 characters.
func CheckHostPattern(what, pattern string) error {
	ok := pattern != "" && len(pattern) <= 253
	for i := 0; ok && i < len(pattern); i++ {
		c := pattern[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '-' || c == '_' || c == ':' || c == '*' || c == '?'
	}
	if !ok {
		return fmt.Errorf("%s %s is not a host pattern: use letters, digits, '.', '-', '_', ':' and the wildcards '*' and '?' (at most 253 characters)",
			what, Quote(Truncate(pattern, 64)))
	}
	return nil
}

// Quote returns s in double quotes with every control character, quote,
// backslash and invalid UTF-8 byte escaped, so that a value from a request
// or a resource cannot forge a line or send terminal escapes when printed.
func Quote(s string) string { return strconv.Quote(s) }

// Printable returns s as it is when every character of it prints as
// itself, and quoted with escapes (Quote) otherwise: a value a caller chose
// (an audit record's join token, a claim, an authority's message) must not
// forge a row or send terminal escapes when printed.
func Printable(s string) string {
	for _, r := range s {
		if r == utf8.RuneError || r == '\\' || !unicode.IsPrint(r) {
			return Quote(s)
		}
	}
	return s
}

// Truncate returns s cut to at most n bytes at a rune boundary, with the
// number of bytes dropped appended ("…(+123 bytes)") when it cut anything.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("…(+%d bytes)", len(s)-cut)
}
