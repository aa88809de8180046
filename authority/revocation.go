package authority

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/authority/locks"
	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
	"golang.org/x/crypto/ssh"
)

// Revocation lists: a lock revokes the unexpired certificates it covers.
// The SSH user CA's go into an OpenSSH KRL (sshd's RevokedKeys), each
// X.509 client CA's into a CRL (PostgreSQL's ssl_crl_file, MariaDB's
// ssl_crl, nginx's ssl_crl). An entry leaves its list when its certificate
// expires. kube-apiserver reads no CRL, and JWT-SVIDs have none: those
// rely on their short lifetime and on renewals being refused once locked.

// CRLPurposes are the X.509 CAs with a CRL (export --type crl --purpose P),
// each the CA of export --type P-ca.
var CRLPurposes = []string{"tls", "database-client", "kubernetes-client", "spiffe"}

// revocationTTL is how long a list is good for: its CRL nextUpdate, and
// the Cache-Control max-age of the HTTP API's answer is at most a tenth.
const revocationTTL = 24 * time.Hour

// Revoked returns the unexpired certificates of ca (named as export --type
// names it) that the lock set ls covers at now.
func Revoked(ctx context.Context, st store.Store, ls *locks.Set, ca string, now time.Time) ([]store.IssuedCertificate, error) {
	issued, err := st.IssuedCertificates(ctx, store.IssuedFilter{ValidAt: now, CA: ca})
	if err != nil {
		return nil, err
	}
	var out []store.IssuedCertificate
	for _, c := range issued {
		prefix := "tls:"
		if strings.HasPrefix(c.CA, "ssh-") {
			prefix = "ssh:"
		}
		sub := locks.Subject{Bot: c.Bot, Instance: c.BotInstance, JoinToken: c.JoinToken, Roles: c.Roles, Claims: c.Claims,
			Serials: []string{prefix + c.Serial}}
		if _, ok := ls.Match(sub, now); ok {
			out = append(out, c)
		}
	}
	return out, nil
}

// KRL is an OpenSSH key revocation list (PROTOCOL.krl) revoking serials of
// certificates signed by each of caKeys: one certificates section per CA
// key in use (both while the CA is rotated). version is krl_version,
// which only grows.
func KRL(caKeys []ssh.PublicKey, serials []uint64, version uint64, generated time.Time) []byte {
	var b bytes.Buffer
	u32 := func(v uint32) { b.Write(binary.BigEndian.AppendUint32(nil, v)) }
	u64 := func(v uint64) { b.Write(binary.BigEndian.AppendUint64(nil, v)) }
	str := func(s []byte) { u32(uint32(len(s))); b.Write(s) }
	u64(0x5353484b524c0a00) // KRL_MAGIC, "SSHKRL\n\0"
	u32(1)                  // KRL_FORMAT_VERSION
	u64(version)
	u64(uint64(generated.Unix()))
	u64(0)   // flags
	str(nil) // reserved
	str([]byte("mbot ssh-user-ca revocations"))
	sorted := slices.Clone(serials)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	var list []byte
	for _, s := range sorted {
		list = binary.BigEndian.AppendUint64(list, s)
	}
	for _, k := range caKeys {
		var sec bytes.Buffer
		secStr := func(s []byte) { sec.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s)))); sec.Write(s) }
		secStr(k.Marshal()) // ca_key
		secStr(nil)         // reserved
		if len(list) > 0 {
			sec.WriteByte(0x20) // KRL_SECTION_CERT_SERIAL_LIST
			secStr(list)
		}
		b.WriteByte(1) // KRL_SECTION_CERTIFICATES
		str(sec.Bytes())
	}
	return b.Bytes()
}

// CRLs are PEM CRLs, one per CA key of purpose in use (both while it is
// rotated), each revoking serials. number is the CRL number, which only grows.
func (c *CAs) CRLs(purpose string, serials []string, number *big.Int, now time.Time) ([]byte, error) {
	set, ok := c.sets[purpose]
	if !ok || !slices.Contains(CRLPurposes, purpose) {
		return nil, fmt.Errorf("--purpose %q has no CRL; use one of %s", purpose, strings.Join(CRLPurposes, ", "))
	}
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		n, ok := new(big.Int).SetString(s, 16)
		if !ok {
			return nil, fmt.Errorf("certificate serial %q of the %s CA is not hexadecimal", s, purpose)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: now.Truncate(time.Second)})
	}
	var out []byte
	for _, m := range set.trusted() {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number:                    number,
			ThisUpdate:                now.Add(-time.Minute),
			NextUpdate:                now.Add(revocationTTL),
			RevokedCertificateEntries: entries,
		}, m.cert, m.key)
		if err != nil {
			return nil, fmt.Errorf("signing the %s CRL: %w", purpose, err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
	}
	return out, nil
}

// sshUserCAKeys are the SSH user CA keys in use, signing one first.
func (c *CAs) sshUserCAKeys() []ssh.PublicKey {
	var out []ssh.PublicKey
	for _, m := range c.sets[caSSHUser].trusted() {
		if pub, err := ssh.NewPublicKey(m.key.Public()); err == nil {
			out = append(out, pub)
		}
	}
	return out
}

// RevocationList renders one list: typ "ssh-krl", or "crl" with purpose.
// The KRL version and CRL number are now in Unix nanoseconds, so that a
// later list always has a higher one, whichever replica made it.
func RevocationList(ctx context.Context, st store.Store, cas *CAs, ls *locks.Set, typ, purpose string, now time.Time) ([]byte, error) {
	switch typ {
	case "ssh-krl":
		if purpose != "" {
			return nil, fmt.Errorf("--purpose is for --type crl; the KRL is the ssh-user-ca's")
		}
		revoked, err := Revoked(ctx, st, ls, "ssh-user-ca", now)
		if err != nil {
			return nil, err
		}
		serials := make([]uint64, 0, len(revoked))
		for _, c := range revoked {
			if n, err := strconv.ParseUint(c.Serial, 10, 64); err == nil {
				serials = append(serials, n)
			}
		}
		return KRL(cas.sshUserCAKeys(), serials, uint64(now.UnixNano()), now), nil
	case "crl":
		if !slices.Contains(CRLPurposes, purpose) {
			return nil, fmt.Errorf("--purpose %q has no CRL; use one of %s", purpose, strings.Join(CRLPurposes, ", "))
		}
		revoked, err := Revoked(ctx, st, ls, purpose+"-ca", now)
		if err != nil {
			return nil, err
		}
		serials := make([]string, 0, len(revoked))
		for _, c := range revoked {
			serials = append(serials, c.Serial)
		}
		return cas.CRLs(purpose, serials, big.NewInt(now.UnixNano()), now)
	}
	return nil, fmt.Errorf("revocation list %q is not one of ssh-krl, crl", typ)
}

// ExportRevocations renders a list for mbot authority export from the
// locks in the store.
func ExportRevocations(ctx context.Context, st store.Store, cas *CAs, typ, purpose string) ([]byte, error) {
	state, err := st.LockState(ctx)
	if err != nil {
		return nil, err
	}
	return RevocationList(ctx, st, cas, locks.FromStore(state), typ, purpose, time.Now())
}

// handleRevocations serves GET /v1/revocations/ssh-krl and
// /v1/revocations/crl/{purpose}: public, like the CA bundles, and
// cacheable; the CRL is signed by its CA, the KRL is checked by sshd
// against nothing (it is a file the host's operator installs). The route
// needs no credential and its answers are 200s, which the guard does not
// charge, so a list is rendered (a store query and, for a CRL, a
// signature: 51 ms at 10,000 serials) at most once per lock set, CA set
// and revocationFresh, however many ask at once.
func (a *Authority) handleRevocations(w http.ResponseWriter, r *http.Request) {
	typ, purpose := r.PathValue("type"), r.PathValue("purpose")
	// A lock set a moment ago by another process (mbot lock in local mode,
	// another replica) is in the list fetched right after it: one versions
	// query, as a join makes, before the cached list is looked at.
	a.refreshNow(r.Context())
	e := a.revocations.entry(typ, purpose)
	if e == nil {
		// Not a list there is: RevocationList says which there are.
		_, err := RevocationList(r.Context(), a.store, a.CAs(), a.Locks(), typ, purpose, time.Now())
		writeError(w, identity.Errorf(identity.CodeBadRequest, "%v", err))
		return
	}
	list, etag, modified, err := e.get(r.Context(), a, typ, purpose)
	if err != nil {
		writeError(w, identity.Errorf(identity.CodeStoreUnavailable, "the revocation list cannot be read now: %v", err))
		return
	}
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "public, max-age=60")
	// Last-Modified is when the revoked serials (or the CAs, or the hour
	// the ETag counts) last changed, not when the list was last rendered.
	w.Header().Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
	inm := r.Header.Get("If-None-Match")
	ims, imsErr := http.ParseTime(r.Header.Get("If-Modified-Since"))
	if inm == etag || inm == "" && imsErr == nil && !modified.Truncate(time.Second).After(ims) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if typ == "crl" {
		w.Header().Set("Content-Type", "application/x-pem-file")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	_, _ = w.Write(list)
}

// revocationFresh is how long a rendered list is served again while the
// lock set and CAs stay the same: certificates that expired in between
// stay listed that long, which is harmless. A lock, an unlock or a CA
// change (on any replica, once this one has read it) renders it anew.
const revocationFresh = 30 * time.Second

// revocationCache holds one entry per list there is; nothing a request
// names adds one.
type revocationCache struct{ entries map[string]*revocationEntry }

func newRevocationCache() *revocationCache {
	c := &revocationCache{entries: map[string]*revocationEntry{"ssh-krl/": {}}}
	for _, p := range CRLPurposes {
		c.entries["crl/"+p] = &revocationEntry{}
	}
	return c
}

func (c *revocationCache) entry(typ, purpose string) *revocationEntry {
	return c.entries[typ+"/"+purpose]
}

// revocationEntry is one list as last rendered. Its mutex makes requests
// that find it stale wait for one rendering instead of each doing it.
type revocationEntry struct {
	mu sync.Mutex
	// renders counts the renderings, for the tests.
	renders int
	locks   *locks.Set
	cas     *CAs
	made    time.Time
	list    []byte
	etag    string
	// modified is when etag last changed.
	modified time.Time
}

func (e *revocationEntry) get(ctx context.Context, a *Authority, typ, purpose string) ([]byte, string, time.Time, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ls, cas, now := a.Locks(), a.CAs(), time.Now()
	if e.list != nil && e.locks == ls && e.cas == cas && now.Sub(e.made) < revocationFresh && now.After(e.made) {
		return e.list, e.etag, e.modified, nil
	}
	list, err := RevocationList(ctx, a.store, cas, ls, typ, purpose, now)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	// A CRL kept on a 304 must not pass its nextUpdate: the hour counts too.
	sum := sha256.Sum256(append(revocationDigest(typ, list), now.Truncate(time.Hour).Format(time.RFC3339)...))
	e.locks, e.cas, e.made, e.list = ls, cas, now, list
	e.renders++
	if etag := `"` + hex.EncodeToString(sum[:16]) + `"`; etag != e.etag {
		e.etag, e.modified = etag, now
	}
	return e.list, e.etag, e.modified, nil
}

// revocationDigest is what the ETag covers: the revoked serials and CA
// keys, not the generation time or number, which change at every render.
func revocationDigest(typ string, list []byte) []byte {
	if typ != "crl" {
		if len(list) > 44 {
			return list[44:] // after magic, format, version, date and flags
		}
		return list
	}
	var out []byte
	for rest := list; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if crl, err := x509.ParseRevocationList(b.Bytes); err == nil {
			out = append(out, crl.AuthorityKeyId...)
			for _, e := range crl.RevokedCertificateEntries {
				out = append(out, e.SerialNumber.Bytes()...)
			}
		}
	}
	return out
}
