package authority

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// jwtOutput is the workload-identity-jwt output type: one JWT-SVID per
// audience (sub = the SPIFFE ID, aud = that audience alone, iss = the
// authority's issuer URL), signed ES256 by the jwt key whose public half
// the authority serves at /.well-known/jwks.json. Granted by role fields
// jwt_audiences (each audience) and spiffe_ids (the subject).
type jwtOutput struct{}

func init() { outputKinds[identity.OutputJWT] = jwtOutput{} }

func (jwtOutput) keys() (sshKey, tlsKey bool) { return false, false }

func (jwtOutput) signers() (sshCA, tlsCA string) { return "", "" }

func (jwtOutput) checkRequest(out *identity.OutputRequest) error {
	r := out.JWT
	if r == nil || len(r.Audiences) == 0 {
		return identity.Errorf(identity.CodeBadRequest, "output %q of type %s asks for no audience; set audiences: (what the relying party expects in aud)", out.Name, identity.OutputJWT)
	}
	if err := checkAudiences(out.Name, r.Audiences); err != nil {
		return err
	}
	if err := checkSPIFFEIDRequest(r.SPIFFEID); err != nil {
		return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
	}
	return nil
}

func checkAudiences(output string, auds []string) error {
	if len(auds) > identity.MaxJWTAudiences {
		return identity.Errorf(identity.CodeBadRequest, "output %q asks for %d audiences; at most %d", output, len(auds), identity.MaxJWTAudiences)
	}
	for i, aud := range auds {
		if err := identity.CheckAudience("audience", aud); err != nil {
			return identity.Errorf(identity.CodeBadRequest, "output %q: %v", output, err)
		}
		if slices.Contains(auds[:i], aud) {
			return identity.Errorf(identity.CodeBadRequest, "output %q: audiences lists %s twice", output, identity.Quote(aud))
		}
	}
	return nil
}

func (jwtOutput) audit(resp *identity.OutputResponse) string {
	g := resp.JWT
	auds := make([]string, len(g.SVIDs))
	for i, s := range g.SVIDs {
		auds[i] = s.Audience
	}
	return fmt.Sprintf("%s type=%s spiffe_id=%s", resp.Name, identity.OutputJWT, g.SPIFFEID) + auditList("audiences", auds)
}

func (jwtOutput) sign(sc *signCtx) (*identity.OutputResponse, error) {
	r := sc.out.JWT
	if err := checkAudiences(sc.out.Name, r.Audiences); err != nil {
		return nil, err
	}
	for _, aud := range r.Audiences {
		if !slices.Contains(sc.grant.Granted(resources.FieldJWTAudiences), aud) {
			return nil, notGranted(sc, resources.FieldJWTAudiences, "JWT audience", aud)
		}
	}
	id, err := spiffeIDFor(sc, r.SPIFFEID)
	if err != nil {
		return nil, err
	}
	if sc.issuer == "" {
		return nil, fmt.Errorf("the authority has no issuer URL to sign JWT-SVIDs with")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: sc.cas.JWT, KeyID: sc.cas.JWTKeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	now := time.Now().Truncate(time.Second)
	exp := now.Add(identity.MaxJWTSVIDTTL)
	if sc.notAfter.Before(exp) {
		exp = sc.notAfter
	}
	grant := &identity.JWTGrant{SPIFFEID: id.String(), Issuer: sc.issuer}
	for _, aud := range r.Audiences {
		token, err := jwt.Signed(signer).Claims(jwt.Claims{
			Issuer:   sc.issuer,
			Subject:  id.String(),
			Audience: jwt.Audience{aud},
			IssuedAt: jwt.NewNumericDate(now),
			Expiry:   jwt.NewNumericDate(exp),
			ID:       newJTI(),
		}).Serialize()
		if err != nil {
			return nil, fmt.Errorf("signing a JWT-SVID: %w", err)
		}
		grant.SVIDs = append(grant.SVIDs, identity.JWTSVID{Audience: aud, Token: token})
	}
	return &identity.OutputResponse{
		Name:      sc.out.Name,
		Type:      identity.OutputJWT,
		Roles:     sc.grant.Roles,
		Logins:    []string{},
		NotBefore: now,
		NotAfter:  exp,
		JWT:       grant,
	}, nil
}

// jwtIssuedCA is what the issued certificates name as the CA of a
// JWT-SVID (the key mbot authority export --type jwt-jwks publishes); its
// serial is the token's jti.
const jwtIssuedCA = "jwt-jwks"

// jwtID is the jti of a JWT-SVID this authority just signed; "" if it
// does not parse.
func jwtID(token string) string {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return ""
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return ""
	}
	return c.ID
}

// newJTI is a JWT ID: 128 random bits, hex.
func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
