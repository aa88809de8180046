package authority

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Provenance: which CI run a certificate went to, on the certificate, so
// that a server's log line (sshd logs the key ID, a database the
// certificate) names the repository, ref, workflow, run and commit. The
// values are the join's identifying claims as the audit records them.

// provenanceClaims are, per item, the claims that give it on the platforms
// (the first one present counts): the repository or project, ref,
// workflow, run or pipeline, and commit.
var provenanceClaims = [][]string{
	{"repository", "project_path", "pipeline_slug", "project_slug"},
	{"ref", "branch"},
	{"workflow"},
	{"run_id", "pipeline_id", "build_id", "build_number"},
	{"sha", "commit"},
}

// maxProvenanceValue bounds each value before escaping.
const maxProvenanceValue = 100

// Fulcio's registered extensions (sigstore's OID arc 1.3.6.1.4.1.57264.1,
// docs/oid-info.md in sigstore/fulcio) for the claims that fit one: each a
// DER UTF8String, so that existing tooling reads them.
var (
	oidSourceRepositoryDigest     = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 13}
	oidSourceRepositoryRef        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 14}
	oidSourceRepositoryIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 15}
	oidBuildTrigger               = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 20}
)

// fulcioClaims map those extensions to the claims that give them.
var fulcioClaims = []struct {
	oid    asn1.ObjectIdentifier
	claims []string
}{
	{oidSourceRepositoryDigest, []string{"sha", "commit"}},
	{oidSourceRepositoryRef, []string{"ref"}},
	{oidSourceRepositoryIdentifier, []string{"repository_id", "project_id"}},
	{oidBuildTrigger, []string{"event_name", "pipeline_source"}},
}

// firstClaim returns the first of names present in claims, bounded.
func firstClaim(claims map[string]string, names []string) (string, string, bool) {
	for _, n := range names {
		if v := claims[n]; v != "" {
			return n, boundValue(v), true
		}
	}
	return "", "", false
}

// boundValue cuts v to maxProvenanceValue bytes at a rune boundary and
// drops invalid UTF-8.
func boundValue(v string) string {
	v = strings.ToValidUTF8(v, "")
	for len(v) > maxProvenanceValue {
		_, size := utf8.DecodeLastRuneInString(v)
		v = v[:len(v)-size]
	}
	return v
}

// provenanceKeyID is what the SSH key ID adds: " name=value" per item
// present, each value percent-escaped outside [A-Za-z0-9._/:@+-], so that
// a log line splits at spaces whatever a claim holds.
func provenanceKeyID(claims map[string]string) string {
	var b strings.Builder
	for _, names := range provenanceClaims {
		name, v, ok := firstClaim(claims, names)
		if !ok {
			continue
		}
		b.WriteString(" " + name + "=")
		for i := 0; i < len(v); i++ {
			c := v[i]
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._/:@+-", c) >= 0 {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
	}
	return b.String()
}

// provenance is the Fulcio extensions of the join's claims.
func (sc *signCtx) provenance() []pkix.Extension { return provenanceExtensions(sc.claims) }

// provenanceExtensions are the Fulcio extensions of the claims that give one.
func provenanceExtensions(claims map[string]string) []pkix.Extension {
	var out []pkix.Extension
	for _, f := range fulcioClaims {
		_, v, ok := firstClaim(claims, f.claims)
		if !ok {
			continue
		}
		der, err := asn1.MarshalWithParams(v, "utf8")
		if err != nil {
			continue // not for valid UTF-8, which boundValue keeps
		}
		out = append(out, pkix.Extension{Id: f.oid, Value: der})
	}
	return out
}
