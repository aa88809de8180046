package authority

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
	"golang.org/x/crypto/ssh"
)

// A CA is rotated in phases, as Teleport's tctl auth rotate does, so that
// nothing that trusts the old CA breaks before it has learnt the new one:
//
//	standby         one CA; no rotation
//	init            the new CA is in every trust bundle; the old one still signs
//	update_clients  the new CA signs clients' credentials (bots, admins,
//	                users); servers' certificates still come from the old
//	update_servers  the new CA signs servers' certificates too: the
//	                authority's own (its CA pin changes for tls), SSH host
//	                and database server certificates; both are trusted
//	standby         the old CA is dropped from every trust bundle
//
// Each step is taken by an operator (mbot authority rotate --phase). The
// grace period is counted from update_clients, when the old CA stops
// signing clients' credentials: update_servers and standby wait for it, so
// that every credential the old CA signed has expired, and every client has
// renewed into a ca.crt holding both CAs, before a server presents a
// certificate of the new CA or the old one is dropped.
const (
	PhaseStandby       = "standby"
	PhaseInit          = "init"
	PhaseUpdateClients = "update_clients"
	PhaseUpdateServers = "update_servers"
)

// rotationPhases are the phases in order; a rotation moves one step at a time.
var rotationPhases = []string{PhaseStandby, PhaseInit, PhaseUpdateClients, PhaseUpdateServers, PhaseStandby}

// DefaultRotationGrace covers the longest lifetime a bot credential can
// have (24h): by then nothing the old CA signed for a bot is still valid.
const DefaultRotationGrace = 24 * time.Hour

// caSet is one CA and, while it is rotated, the CA replacing it.
type caSet struct {
	def           caDef
	current, next *caMaterial
	rotation      store.CARotation // zero when not rotated
}

// signing is the CA that signs in the rotation's phase.
func (s *caSet) signing() *caMaterial {
	if s.def.signsServers {
		return s.serving()
	}
	if s.next != nil && (s.rotation.Phase == PhaseUpdateClients || s.rotation.Phase == PhaseUpdateServers) {
		return s.next
	}
	return s.current
}

// serving is the TLS CA that signs the authority's own serving certificate.
func (s *caSet) serving() *caMaterial {
	if s.next != nil && s.rotation.Phase == PhaseUpdateServers {
		return s.next
	}
	return s.current
}

// trusted is every CA to trust, the signing one first.
func (s *caSet) trusted() []*caMaterial {
	out := []*caMaterial{s.signing()}
	if s.next != nil {
		other := s.current
		if out[0] == s.current {
			other = s.next
		}
		out = append(out, other)
	}
	return out
}

func (s *caSet) trustedPEM() []byte {
	var b []byte
	for _, m := range s.trusted() {
		b = append(b, m.certPEM...)
	}
	return b
}

func (s *caSet) trustedSSH() string {
	var b strings.Builder
	for _, m := range s.trusted() {
		pub, err := ssh.NewPublicKey(m.key.Public())
		if err != nil {
			panic(err) // checked by parseCA
		}
		b.Write(ssh.MarshalAuthorizedKey(pub))
	}
	return b.String()
}

func (m *caMaterial) x509CA() *X509CA {
	return &X509CA{Cert: m.cert, Key: m.key, CertPEM: m.certPEM}
}

// RotationTypes are the names mbot authority rotate --type takes: each CA
// by name, or by its export type (ssh-user-ca, spiffe-ca, ...).
func RotationTypes() []string {
	names := make([]string, len(caDefs))
	for i, d := range caDefs {
		names[i] = d.name
	}
	return names
}

// rotationCA resolves a --type value to a CA name.
func rotationCA(typ string) (string, error) {
	name := strings.TrimSuffix(typ, "-ca")
	if name == "jwt-jwks" {
		name = caJWT
	}
	if _, ok := caDefByName(name); !ok {
		return "", fmt.Errorf("--type %q is not a CA; use one of %s", typ, strings.Join(RotationTypes(), ", "))
	}
	return name, nil
}

// RotateRequest is one step of a CA rotation.
type RotateRequest struct {
	// Type is the CA: ssh-user, tls, spiffe, ... (RotationTypes).
	Type string
	// Phase is the phase to move to; empty starts a rotation (init).
	Phase string
	// Grace is the grace period of a rotation being started.
	Grace time.Duration
	// Force moves on before the grace period has passed, breaking what
	// trusts only the old CA.
	Force bool
	Now   time.Time
	// Actor names who took the step, for the audit log.
	Actor string
}

// RotateCA takes one step of a CA's rotation in the store; every authority
// sharing the store picks it up within reloadInterval. It returns what the
// rotation is now, for the operator, and records the step in the audit log.
func RotateCA(ctx context.Context, st store.Store, cas *CAs, req RotateRequest) (string, error) {
	out, err := rotateCA(ctx, st, cas, req)
	ev := &store.AuditEvent{Event: "ca.rotate", Allowed: err == nil, Remote: req.Actor,
		Claims: map[string]string{"type": req.Type, "phase": req.Phase}}
	if err != nil {
		ev.Message = err.Error()
	} else {
		ev.Message = strings.SplitN(out, "\n", 2)[0]
	}
	if aerr := st.Audit(ctx, ev); aerr != nil && err == nil {
		return "", fmt.Errorf("the rotation step is taken, but recording it in the audit log failed: %w", aerr)
	}
	return out, err
}

func rotateCA(ctx context.Context, st store.Store, cas *CAs, req RotateRequest) (string, error) {
	name, err := rotationCA(req.Type)
	if err != nil {
		return "", err
	}
	set := cas.sets[name]
	from := set.rotation.Phase
	if from == "" {
		from = PhaseStandby
	}
	to := req.Phase
	if to == "" {
		to = PhaseInit
	}
	if !slices.Contains(rotationPhases, to) {
		return "", fmt.Errorf("--phase %q is not one of %s, %s, %s, %s", to, PhaseInit, PhaseUpdateClients, PhaseUpdateServers, PhaseStandby)
	}
	if i := slices.Index(rotationPhases[:len(rotationPhases)-1], from); rotationPhases[i+1] != to {
		return "", fmt.Errorf("the %s CA is in phase %s: the next phase is %s, not %s (mbot authority rotate --status shows every rotation)",
			name, from, rotationPhases[i+1], to)
	}
	rot := set.rotation
	rot.Phase, rot.Updated = to, req.Now
	switch to {
	case PhaseInit:
		if req.Grace <= 0 {
			return "", fmt.Errorf("--grace %s: give the grace period, at least the longest lifetime of what the %s CA signs (default %s)", req.Grace, name, DefaultRotationGrace)
		}
		rot = store.CARotation{CA: name, Phase: PhaseInit, Grace: req.Grace, Started: req.Now, Updated: req.Now}
		next, err := newCAMaterial(set.def, cas.clusterName, cas.kek)
		if err != nil {
			return "", fmt.Errorf("making the new %s CA: %w", name, err)
		}
		err = st.StartCARotation(ctx, rot, next)
		return describeStep(name, rot, err)
	case PhaseUpdateClients:
		rot.NewSignsSince = req.Now
	case PhaseUpdateServers, PhaseStandby:
		if until := rot.NewSignsSince.Add(rot.Grace); req.Now.Before(until) && !req.Force {
			return "", fmt.Errorf("the %s CA's grace period runs until %s (%s from now): the old CA signed credentials that may still be in use, and clients may hold only the old CA; wait, or pass --force to break them",
				name, until.UTC().Format(time.RFC3339), until.Sub(req.Now).Round(time.Second))
		}
		if to == PhaseStandby {
			return describeStep(name, rot, st.FinishCARotation(ctx, name, from))
		}
	}
	return describeStep(name, rot, st.SetCARotationPhase(ctx, from, rot))
}

// describeStep says what a rotation step did, for the operator.
func describeStep(name string, rot store.CARotation, err error) (string, error) {
	if errors.Is(err, store.ErrConflict) {
		return "", fmt.Errorf("%w; run mbot authority rotate --status and try again", err)
	}
	if err != nil {
		return "", fmt.Errorf("rotating the %s CA: %w", name, err)
	}
	switch rot.Phase {
	case PhaseInit:
		return fmt.Sprintf("%s CA rotation: init: the new CA is now in every trust bundle, the old one still signs.\n"+
			"Next: make sure servers pick up the new bundle (re-export it, or let identities renew), then\n"+
			"  mbot authority rotate --type %s --phase update_clients\n", name, name), nil
	case PhaseUpdateClients:
		return fmt.Sprintf("%s CA rotation: update_clients: the new CA signs everything issued from now on; both are trusted.\n"+
			"Next, after the grace period (%s, until %s):\n  mbot authority rotate --type %s --phase update_servers\n",
			name, rot.Grace, rot.NewSignsSince.Add(rot.Grace).UTC().Format(time.RFC3339), name), nil
	case PhaseUpdateServers:
		return fmt.Sprintf("%s CA rotation: update_servers: the authority serves a certificate of the new CA (its CA pin changes for --type tls); both are still trusted.\n"+
			"Next: mbot authority rotate --type %s --phase standby\n", name, name), nil
	}
	return fmt.Sprintf("%s CA rotation: standby: the old CA is dropped from every trust bundle; the rotation is done.\n", name), nil
}

// RotationStatus lists every CA with its rotation phase, the grace period,
// and the fingerprints of its CAs, for mbot authority rotate --status.
func (c *CAs) RotationStatus(now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-18s %-15s %-10s %-22s %s\n", "CA", "PHASE", "GRACE", "GRACE ENDS", "CAS (signing first)")
	for _, def := range caDefs {
		set := c.sets[def.name]
		phase, grace, ends := PhaseStandby, "-", "-"
		if set.rotation.CA != "" {
			phase, grace = set.rotation.Phase, set.rotation.Grace.String()
			if !set.rotation.NewSignsSince.IsZero() {
				end := set.rotation.NewSignsSince.Add(set.rotation.Grace)
				ends = end.UTC().Format(time.RFC3339)
				if !now.Before(end) {
					ends += " (passed)"
				}
			} else {
				ends = "(from update_clients)"
			}
		}
		var fps []string
		for _, m := range set.trusted() {
			fps = append(fps, fingerprint(def, m))
		}
		fmt.Fprintf(&b, "%-18s %-15s %-10s %-22s %s\n", def.name, phase, grace, ends, strings.Join(fps, " "))
	}
	fmt.Fprintf(&b, "\nCA pin of the serving certificate (mbot issue --ca-pin): %s\n", c.Pin())
	if set := c.sets[caTLS]; set.next != nil {
		fmt.Fprintf(&b, "CA pin after the TLS rotation:                          %s\n", CAPin(set.next.cert))
		// Trusted clusters learn the new CA over their tunnel, in memory.
		fmt.Fprintf(&b, "Trusted clusters follow the TLS rotation while connected; once it is done, put the new pin in\n"+
			"the spec.ca_pin of this cluster's leaf_cluster on its roots and spec.root.ca_pin of its trusted_cluster on its leaves.\n")
	}
	return b.String()
}

// fingerprint names a CA in the status: the pin of an X.509 CA, the SSH
// fingerprint of an SSH CA, the kid of the JWT key.
func fingerprint(def caDef, m *caMaterial) string {
	switch {
	case def.x509 != nil:
		return CAPin(m.cert)
	case def.name == caJWT:
		return "kid:" + JWKThumbprint(&m.key.(*ecdsa.PrivateKey).PublicKey)
	}
	pub, err := ssh.NewPublicKey(m.key.Public())
	if err != nil {
		return "?"
	}
	return ssh.FingerprintSHA256(pub)
}

// verifiedByTLSCA reports whether cert was signed by one of the trusted TLS CAs.
func (c *CAs) verifiedByTLSCA(cert *x509.Certificate) bool {
	for _, root := range c.TLSRoots() {
		if cert.CheckSignatureFrom(root) == nil {
			return true
		}
	}
	return false
}

// CAState is one CA as the console shows it: its rotation phase and the
// fingerprints of the CAs trusted for it, the signing one first.
type CAState struct {
	CA           string    `json:"ca"`
	Phase        string    `json:"phase"`
	Grace        string    `json:"grace,omitempty"`
	Started      time.Time `json:"started,omitzero"`
	GraceEnds    time.Time `json:"grace_ends,omitzero"`
	Fingerprints []string  `json:"fingerprints"`
}

// CAStatus is every CA's state and the CA pin of the serving certificate
// (and the pin after a TLS rotation, while one runs).
type CAStatus struct {
	CAs     []CAState `json:"cas"`
	Pin     string    `json:"ca_pin"`
	NextPin string    `json:"next_ca_pin,omitempty"`
}

// Status is what RotationStatus prints, as data.
func (c *CAs) Status() *CAStatus {
	st := &CAStatus{Pin: c.Pin()}
	for _, def := range caDefs {
		set := c.sets[def.name]
		s := CAState{CA: def.name, Phase: PhaseStandby}
		if set.rotation.CA != "" {
			s.Phase, s.Grace, s.Started = set.rotation.Phase, set.rotation.Grace.String(), set.rotation.Started
			if !set.rotation.NewSignsSince.IsZero() {
				s.GraceEnds = set.rotation.NewSignsSince.Add(set.rotation.Grace)
			}
		}
		for _, m := range set.trusted() {
			s.Fingerprints = append(s.Fingerprints, fingerprint(def, m))
		}
		st.CAs = append(st.CAs, s)
	}
	if set := c.sets[caTLS]; set.next != nil {
		st.NextPin = CAPin(set.next.cert)
	}
	return st
}

// CAStatus reads the CAs' state from the store: a rotation another
// process stepped counts at once.
func (a *Authority) CAStatus(ctx context.Context) (*CAStatus, error) {
	cas, err := LoadCAs(ctx, a.store.Store, a.cfg.ClusterName, a.kek)
	if err != nil {
		return nil, err
	}
	return cas.Status(), nil
}

// Refresh reads the resources and locks again if another process changed them.
func (a *Authority) Refresh(ctx context.Context) { a.refreshNow(ctx) }
