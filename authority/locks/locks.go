// Package locks is the one lock set that joins, renewals, exchanges, the
// relay to leaves and the admin API read: the locks admins set (mbot lock
// KIND/NAME, --claim, --admin) and those the authority sets itself when it
// sees a copied identity (a bot instance, a bound_keypair join token, a
// whole bot in stores of older authorities), with one refusal shape.
package locks

import (
	"cmp"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// The kinds of lock, as mbot lock KIND/NAME names them.
const (
	KindBot       = "bot"
	KindInstance  = "bot_instance"
	KindJoinToken = "join_token"
	KindRole      = "role"
	KindCert      = "cert"
	KindClaim     = "claim"
	KindAdmin     = "admin"
)

// Kinds are the kinds mbot lock takes, in the order a join checks them.
var Kinds = []string{KindCert, KindInstance, KindBot, KindJoinToken, KindClaim, KindRole, KindAdmin}

// Lock is one lock of the set.
type Lock struct {
	Kind string `json:"kind"`
	// Target is the name, instance ID or serial it locks; for a claim,
	// "name=value".
	Target string    `json:"target"`
	Reason string    `json:"reason"`
	Since  time.Time `json:"locked_since"`
	// Expires is when it stops counting; zero for never.
	Expires time.Time `json:"expires,omitzero"`
	// LockedBy names the admin who set it ("local admin root", "admin
	// alice"), or "authority" for a lock the authority set itself.
	LockedBy string `json:"locked_by"`
	// Automatic marks a lock the authority set on seeing a copied identity.
	Automatic bool `json:"automatic,omitempty"`
	// For an automatic instance lock: its bot, join token and runner.
	Bot       string    `json:"bot,omitempty"`
	JoinToken string    `json:"join_token,omitempty"`
	FirstJoin time.Time `json:"first_join,omitzero"`
	Runner    string    `json:"runner,omitempty"`
	// Cluster is the root cluster whose lock a leaf enforces; "" for this
	// cluster's own.
	Cluster string `json:"cluster,omitempty"`
	// Serials are, for a root's claim or join_token lock on a leaf, the
	// root's unexpired identity certificates it covers ("tls:HEX"): a root
	// certificate carries neither its join's claims nor its join token, so
	// the root names the certificates (Match refuses them).
	Serials []string `json:"serials,omitempty"`
}

// Name is the lock's KIND/TARGET, as mbot lock and mbot unlock take it.
func (l Lock) Name() string { return l.Kind + "/" + l.Target }

// Active reports whether the lock counts at now.
func (l Lock) Active(now time.Time) bool { return l.Expires.IsZero() || now.Before(l.Expires) }

// Code is the refusal code of what the lock refuses.
func (l Lock) Code() identity.ErrorCode {
	switch l.Kind {
	case KindBot:
		return identity.CodeBotLocked
	case KindInstance:
		return identity.CodeInstanceLocked
	case KindJoinToken:
		return identity.CodeJoinTokenLocked
	case KindRole:
		return identity.CodeRoleLocked
	case KindCert:
		return identity.CodeCertLocked
	case KindClaim:
		return identity.CodeClaimLocked
	}
	return identity.CodeAdminLocked
}

// UnlockCommand is how an admin lifts the lock.
func (l Lock) UnlockCommand() string {
	if l.Kind == KindClaim {
		return "mbot unlock --claim " + identity.Printable(l.Target)
	}
	return "mbot unlock " + identity.Printable(l.Name())
}

// Refusal is the one refusal of whatever the lock covers (what: "join",
// "renewal", "exchange", "admin API request"): it names the lock, its
// reason and how to lift it. An automatic instance lock's reason names the
// runner's address, which only the audit record gets: the caller may hold
// the copy.
func (l Lock) Refusal(what string) *identity.Error {
	since := l.Since.UTC().Format(time.RFC3339)
	until := ""
	if !l.Expires.IsZero() {
		until = ", until " + l.Expires.UTC().Format(time.RFC3339)
	}
	where, who := "", "on this cluster"
	if l.Cluster != "" {
		where, who = " on root cluster "+l.Cluster, "on root cluster "+l.Cluster
	}
	full := fmt.Sprintf("%s is locked%s since %s%s by %s: %s", identity.Printable(l.Name()), where, since, until,
		identity.Printable(l.LockedBy), identity.Printable(l.Reason))
	if l.Automatic && l.Kind == KindInstance {
		first := "joined before instances were recorded"
		if !l.FirstJoin.IsZero() {
			first = "first joined " + l.FirstJoin.UTC().Format(time.RFC3339)
		}
		runner := "runner unknown: joined before instances were recorded"
		if !l.FirstJoin.IsZero() {
			runner = first
			if l.Runner != "" {
				runner += " from " + identity.Printable(l.Runner)
			}
		}
		full = fmt.Sprintf("bot instance %s of bot %s (join token %q, %s) is locked%s since %s by %s: %s", l.Target, l.Bot, l.JoinToken, runner,
			where, since, identity.Printable(l.LockedBy), identity.Printable(l.Reason))
		return &identity.Error{Code: l.Code(), Err: auditDetail(full),
			Message: fmt.Sprintf("%s refused: instance %s of bot %q (%s) is locked%s since %s: a copy of its identity is in use elsewhere, so its renewals are refused; "+
				"the bot's other instances keep renewing. An admin %s lifts the lock with %s, which ends this instance's renewals; "+
				"the runner then joins again with a new secret: mbot tokens add --bot %s",
				what, l.Target, l.Bot, first, where, since, who, l.UnlockCommand(), l.Bot)}
	}
	return &identity.Error{Code: l.Code(), Err: auditDetail(full),
		Message: fmt.Sprintf("%s refused: %s; an admin %s lifts the lock with %s", what, full, who, l.UnlockCommand())}
}

// auditDetail is what the audit record says of a refusal (the authority's
// refusal recorder reads it as the full reason).
type auditDetail string

func (d auditDetail) Error() string { return string(d) }

// AuditDetail is the type of a refusal's Err that carries the full reason
// for the audit record.
func AuditDetail(err error) (string, bool) {
	d, ok := err.(auditDetail)
	return string(d), ok
}

type key struct{ kind, target string }

// Set is the lock set as of one generation of the store's locks. It is
// never changed: a change makes a new Set.
type Set struct {
	generation int64
	locks      map[key][]Lock
	claims     int // how many claim locks, so that joins without any skip the claims
	// covered are the locks that name the certificates they cover
	// (Lock.Serials), by serial.
	covered map[string][]Lock
}

// NewSet returns the set of locks, as of generation.
func NewSet(generation int64, list []Lock) *Set {
	s := &Set{generation: generation, locks: make(map[key][]Lock, len(list))}
	for _, l := range list {
		k := key{l.Kind, l.Target}
		s.locks[k] = append(s.locks[k], l)
		if l.Kind == KindClaim {
			s.claims++
		}
		for _, serial := range l.Serials {
			if s.covered == nil {
				s.covered = map[string][]Lock{}
			}
			s.covered[serial] = append(s.covered[serial], l)
		}
	}
	return s
}

// FromStore is the lock set of what the store holds.
func FromStore(st *store.LockState) *Set {
	var list []Lock
	for _, l := range st.Locks {
		list = append(list, Lock{Kind: l.Kind, Target: l.Target, Reason: l.Reason, Since: l.Time, Expires: l.Expires, LockedBy: l.LockedBy})
	}
	for _, l := range st.Instances {
		list = append(list, Lock{Kind: KindInstance, Target: l.Instance, Reason: l.Reason, Since: l.Time, LockedBy: "authority", Automatic: true,
			Bot: l.Bot, JoinToken: l.JoinToken, FirstJoin: l.FirstJoin, Runner: l.Runner})
	}
	for _, l := range st.Bots {
		list = append(list, Lock{Kind: KindBot, Target: l.Bot, Since: l.Time, LockedBy: "authority", Automatic: true, JoinToken: l.JoinToken,
			Reason: l.Reason + "; a copy of its identity is in use elsewhere, and unlocking the bot ends every renewal of it: its token joins then need new secrets (mbot tokens add --bot " + l.Bot + ")"})
	}
	for name, l := range st.JoinTokens {
		list = append(list, Lock{Kind: KindJoinToken, Target: name, Reason: l.Reason, Since: l.Time, LockedBy: "authority", Automatic: true})
	}
	return NewSet(st.Version, list)
}

// Generation changes whenever a lock is added, lifted or changed, by any
// process sharing the store: a cache of what the set covers (revocation
// lists) is current while it is the same.
func (s *Set) Generation() int64 { return s.generation }

// Lookup returns the lock on kind/target that counts at now: an admin's
// before the authority's.
func (s *Set) Lookup(kind, target string, now time.Time) (Lock, bool) {
	for _, l := range s.locks[key{kind, target}] {
		if l.Active(now) {
			return l, true
		}
	}
	return Lock{}, false
}

// List returns the locks that count at now, by kind and target.
func (s *Set) List(now time.Time) []Lock {
	var out []Lock
	for _, ls := range s.locks {
		for _, l := range ls {
			if l.Active(now) {
				out = append(out, l)
			}
		}
	}
	slices.SortFunc(out, func(a, b Lock) int {
		return cmp.Or(cmp.Compare(slices.Index(Kinds, a.Kind), slices.Index(Kinds, b.Kind)), strings.Compare(a.Target, b.Target),
			cmp.Compare(a.LockedBy, b.LockedBy))
	})
	return out
}

// Subject is what a join, renewal or exchange would certify, or what a
// certificate was issued to: everything a lock may name.
type Subject struct {
	Bot, Instance, JoinToken string
	Roles                    []string
	// Claims are the identifying claims of the join, as the audit records them.
	Claims map[string]string
	// Serials are the certificates' serials as the audit records them
	// ("ssh:DECIMAL", "tls:HEX").
	Serials []string
}

// Match returns the first lock, in the order of Kinds, that covers sub at now.
func (s *Set) Match(sub Subject, now time.Time) (Lock, bool) {
	if len(s.locks) == 0 {
		return Lock{}, false
	}
	for _, serial := range sub.Serials {
		for _, t := range serialTargets(serial) {
			if l, ok := s.Lookup(KindCert, t, now); ok {
				return l, true
			}
		}
	}
	for _, c := range []struct{ kind, target string }{{KindInstance, sub.Instance}, {KindBot, sub.Bot}, {KindJoinToken, sub.JoinToken}} {
		if c.target == "" {
			continue
		}
		for _, l := range s.locks[key{c.kind, c.target}] {
			// A bound_keypair join token the authority locked is refused by
			// its verifier, in the transaction that checks the join
			// sequence, with what to do about the copied key.
			if l.Active(now) && !(l.Kind == KindJoinToken && l.Automatic) {
				return l, true
			}
		}
	}
	for _, serial := range sub.Serials {
		for _, l := range s.covered[serial] {
			if l.Active(now) {
				return l, true
			}
		}
	}
	if s.claims > 0 {
		for _, name := range slices.Sorted(maps.Keys(sub.Claims)) {
			if l, ok := s.Lookup(KindClaim, name+"="+sub.Claims[name], now); ok {
				return l, true
			}
		}
	}
	for _, r := range sub.Roles {
		if l, ok := s.Lookup(KindRole, r, now); ok {
			return l, true
		}
	}
	return Lock{}, false
}

// Covers returns the lock that covers a certificate already issued to sub
// (its serials with their "ssh:"/"tls:" prefix, see CertSerial), at now:
// what a revocation list lists. Unlike Match it counts the locks the
// authority set on a copied bound_keypair key too.
func (s *Set) Covers(sub Subject, now time.Time) (Lock, bool) {
	if l, ok := s.Match(sub, now); ok {
		return l, true
	}
	if sub.JoinToken != "" {
		return s.Lookup(KindJoinToken, sub.JoinToken, now)
	}
	return Lock{}, false
}

// CertSerial is a serial as the audit and cert locks write it: "ssh:" and
// the decimal serial for a certificate of an SSH CA (ca as mbot authority
// export --type names it: ssh-user-ca, ssh-host-ca), "tls:" and the
// upper-case hexadecimal one for the X.509 CAs.
func CertSerial(ca, serial string) string {
	if strings.HasPrefix(ca, "ssh-") {
		return "ssh:" + serial
	}
	return "tls:" + serial
}

// serialTargets are the cert lock targets a serial as the audit records it
// ("ssh:123", "tls:AB12") matches: with its prefix, and bare.
func serialTargets(serial string) []string {
	prefix, bare, ok := strings.Cut(serial, ":")
	if !ok {
		return []string{serial}
	}
	return []string{prefix + ":" + bare, bare}
}

// NormalizeSerial returns the cert lock target for serial as an admin
// types it: "ssh:DECIMAL" for an SSH certificate, "tls:HEX" (upper case,
// no colons or leading zeros, as the audit and openssl print it) for
// X.509, or a bare serial, which matches either.
func NormalizeSerial(serial string) (string, error) {
	prefix, bare, ok := strings.Cut(strings.TrimSpace(serial), ":")
	if !ok {
		prefix, bare = "", prefix
	}
	bad := fmt.Errorf("%s is not a certificate serial: give it as mbot audit prints it, ssh:DECIMAL or tls:HEX (or bare)",
		identity.Quote(identity.Truncate(serial, 80)))
	switch strings.ToLower(prefix) {
	case "ssh":
		n, err := strconv.ParseUint(bare, 10, 64)
		if err != nil || n == 0 {
			return "", bad
		}
		return "ssh:" + strconv.FormatUint(n, 10), nil
	case "tls", "x509":
		n, ok := new(big.Int).SetString(strings.ReplaceAll(bare, ":", ""), 16)
		if !ok || n.Sign() <= 0 || n.BitLen() > 160 {
			return "", bad
		}
		return "tls:" + fmt.Sprintf("%X", n), nil
	case "":
		if bare == "" || len(bare) > 64 || strings.Trim(strings.ToUpper(bare), "0123456789ABCDEF") != "" {
			return "", bad
		}
		return strings.ToUpper(strings.TrimLeft(bare, "0")), nil
	}
	return "", bad
}
