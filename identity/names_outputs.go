package identity

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Rules for the values role fields grant to outputs other than identity
// (SPEC §7). Each is checked when a role is loaded and again, after
// templates expand, right before the value is signed or written.

// MaxDBNameLen bounds a database name: PostgreSQL's identifiers are at
// most 63 bytes, MySQL's 64.
const MaxDBNameLen = 63

// CheckDBName checks a database name (db_names, db_name): letters, digits,
// '_', '-', '.' and '$', not starting with '-', at most MaxDBNameLen bytes.
// It reaches pg_service.conf, my.cnf and an env file, so nothing that
// quotes, separates or starts an option.
func CheckDBName(what, name string) error {
	ok := name != "" && len(name) <= MaxDBNameLen && name[0] != '-'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == '$'
	}
	if !ok {
		return fmt.Errorf("%s %s is not a database name: use letters, digits, '_', '-', '.' and '$', not starting with '-' (at most %d characters)",
			what, Quote(Truncate(name, 64)), MaxDBNameLen)
	}
	return nil
}

// MaxKubernetesNameLen bounds a Kubernetes user or group name.
const MaxKubernetesNameLen = 253

// CheckKubernetesName checks a Kubernetes user or group (kubernetes_users,
// kubernetes_groups): printable ASCII without spaces or commas (a comma
// separates groups in kubectl's and the API server's flags), at most
// MaxKubernetesNameLen bytes. "system:serviceaccount:ns:name" passes.
func CheckKubernetesName(what, name string) error {
	ok := name != "" && len(name) <= MaxKubernetesNameLen
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c > ' ' && c < 0x7f && c != ','
	}
	if !ok {
		return fmt.Errorf("%s %s is not a Kubernetes user or group: use printable ASCII without spaces or commas (at most %d characters)",
			what, Quote(Truncate(name, 64)), MaxKubernetesNameLen)
	}
	return nil
}

// MaxSPIFFEPathLen bounds a SPIFFE ID's path.
const MaxSPIFFEPathLen = 255

// CheckSPIFFEPath checks the path of a SPIFFE ID (spiffe_id): '/'-separated
// segments of letters, digits, '.', '-' and '_' (the SPIFFE ID spec's set),
// none empty, "." or "..", at most MaxSPIFFEPathLen bytes.
func CheckSPIFFEPath(what, path string) error {
	return checkSPIFFEPath(what, path, false)
}

// CheckSPIFFEPattern checks a role's spiffe_ids entry: a SPIFFE ID path
// whose last segment may be '*' (any one or more segments below).
func CheckSPIFFEPattern(what, pattern string) error {
	return checkSPIFFEPath(what, pattern, true)
}

func checkSPIFFEPath(what, path string, glob bool) error {
	ok := strings.HasPrefix(path, "/") && len(path) <= MaxSPIFFEPathLen
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i, seg := range segs {
		if !ok {
			break
		}
		if glob && seg == "*" && i == len(segs)-1 && i > 0 {
			continue
		}
		ok = seg != "" && seg != "." && seg != ".."
		for j := 0; ok && j < len(seg); j++ {
			c := seg[j]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
		}
	}
	if !ok {
		rule := ""
		if glob {
			rule = "; '*' is allowed only as a whole last segment (/ci/team/*)"
		}
		return fmt.Errorf("%s %s is not a SPIFFE ID path: start with '/', use segments of letters, digits, '.', '-' and '_', none empty, '.' or '..' (at most %d characters)%s",
			what, Quote(Truncate(path, 64)), MaxSPIFFEPathLen, rule)
	}
	return nil
}

// MatchSPIFFEPattern reports whether a SPIFFE ID path matches a role's
// pattern: equal, or below the pattern's prefix when it ends in "/*".
func MatchSPIFFEPattern(pattern, path string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/*"); ok {
		return strings.HasPrefix(path, prefix+"/") && len(path) > len(prefix)+1
	}
	return pattern == path
}

// CheckDNSPattern checks a DNS name that may start with "*." (dns_sans,
// host_names): lower- or upper-case letters, digits, '-' and '_' in labels
// of at most 63 characters separated by dots, at most 253 characters.
func CheckDNSPattern(what, name string) error {
	rest := strings.TrimPrefix(name, "*.")
	ok := rest != "" && len(name) <= 253
	for _, label := range strings.Split(rest, ".") {
		ok = ok && label != "" && len(label) <= 63 && label[0] != '-' && label[len(label)-1] != '-'
		for i := 0; ok && i < len(label); i++ {
			c := label[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		}
	}
	if !ok {
		return fmt.Errorf("%s %s is not a DNS name: use labels of letters, digits, '-' and '_' separated by dots, optionally starting with '*.' (at most 253 characters)",
			what, Quote(Truncate(name, 64)))
	}
	return nil
}

// MatchDNSPattern reports whether a DNS name matches a pattern: equal
// (case-insensitively), or exactly one label below a "*." pattern.
func MatchDNSPattern(pattern, name string) bool {
	pattern, name = strings.ToLower(pattern), strings.ToLower(name)
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		label, rest, found := strings.Cut(name, ".")
		return found && label != "" && label != "*" && rest == suffix
	}
	return pattern == name
}

// MaxAudienceLen bounds a JWT audience.
const MaxAudienceLen = 255

// CheckAudience checks a JWT audience (jwt_audiences, audiences): printable
// ASCII without spaces, at most MaxAudienceLen bytes (a URL such as
// sts.amazonaws.com or https://vault.example.com passes).
func CheckAudience(what, aud string) error {
	ok := aud != "" && len(aud) <= MaxAudienceLen && utf8.ValidString(aud)
	for i := 0; ok && i < len(aud); i++ {
		ok = aud[i] > ' ' && aud[i] < 0x7f
	}
	if !ok {
		return fmt.Errorf("%s %s is not an audience: use printable ASCII without spaces (at most %d characters)", what, Quote(Truncate(aud, 64)), MaxAudienceLen)
	}
	return nil
}

// MaxHostNames bounds the names one ssh_host output asks for.
const MaxHostNames = 32

// CheckHostName checks a name an SSH host certificate is asked for
// (host_names of an ssh_host output): a DNS name as CheckDNSPattern
// allows, without a wildcard. OpenSSH reads a host certificate's
// principals as patterns, so a '*' there would let one certificate stand
// for every host below it.
func CheckHostName(what, name string) error {
	if err := CheckDNSPattern(what, name); err != nil {
		return err
	}
	if strings.HasPrefix(name, "*.") {
		return fmt.Errorf("%s %s is a wildcard; a host certificate names each host exactly: ask for the host's own name (a role's host_names pattern %s grants one label in place of '*')",
			what, Quote(Truncate(name, 64)), Quote(Truncate(name, 64)))
	}
	return nil
}

// CheckServerNamePattern checks a role's db_server_names entry: an IP
// address, or a DNS name that may start with '*.' (one label).
func CheckServerNamePattern(what, name string) error {
	if isIP(name) {
		return nil
	}
	if err := CheckDNSPattern(what, name); err != nil {
		return fmt.Errorf("%w, or an IP address", err)
	}
	return nil
}

// CheckServerName checks a name a database server's certificate is asked
// for (server_names of a database_server output): an IP address, or a DNS
// name without a wildcard: a certificate names each server exactly.
func CheckServerName(what, name string) error {
	if isIP(name) {
		return nil
	}
	if err := CheckDNSPattern(what, name); err != nil {
		return fmt.Errorf("%w, or an IP address", err)
	}
	if strings.HasPrefix(name, "*.") {
		return fmt.Errorf("%s %s is a wildcard; a server certificate names each server exactly: ask for the server's own name (a role's db_server_names pattern %s grants one label in place of '*')",
			what, Quote(Truncate(name, 64)), Quote(Truncate(name, 64)))
	}
	return nil
}

// MatchServerName reports whether a server name matches a db_server_names
// pattern: the same IP address, or a DNS name as MatchDNSPattern matches.
func MatchServerName(pattern, name string) bool {
	p, perr := netip.ParseAddr(pattern)
	n, nerr := netip.ParseAddr(name)
	if perr == nil || nerr == nil {
		return perr == nil && nerr == nil && p.Unmap() == n.Unmap()
	}
	return MatchDNSPattern(pattern, name)
}

// isIP reports whether s is an IP address without a zone.
func isIP(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Zone() == ""
}
