package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/mbot-dev/mbot/identity"
)

func TestRenderJWT(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(sub, iss, aud string) string {
		tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub, Issuer: iss, Audience: jwt.Audience{aud}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	const id, iss = "spiffe://acme/bot/deployer", "https://mbot.acme.com"
	resp := &identity.JoinResponse{ClusterName: "acme", Bot: "deployer"}
	grant := func(svids ...identity.JWTSVID) *identity.OutputResponse {
		return &identity.OutputResponse{Name: "jwt", Type: OutputTypeJWT, NotAfter: time.Now().Add(time.Hour), JWT: &identity.JWTGrant{SPIFFEID: id, Issuer: iss, SVIDs: svids}}
	}
	sts, vault := sign(id, iss, "sts.amazonaws.com"), sign(id, iss, "vault")
	files, err := jwtOutput{}.render("/ci/jwt", &identity.Keys{}, resp, grant(identity.JWTSVID{Audience: "sts.amazonaws.com", Token: sts}, identity.JWTSVID{Audience: "vault", Token: vault}))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]identity.File{}
	for _, f := range files {
		byName[f.Name] = f
	}
	if f := byName["jwt_svid"]; string(f.Data) != sts || f.Mode != 0o600 {
		t.Errorf("jwt_svid %q mode %o, want the first audience's token alone", f.Data, f.Mode)
	}
	var all map[string]string
	if err := json.Unmarshal(byName["jwt_svids.json"].Data, &all); err != nil || all["vault"] != vault || all["sts.amazonaws.com"] != sts {
		t.Errorf("jwt_svids.json %s: %v", byName["jwt_svids.json"].Data, err)
	}
	sum := string(byName["workload-identity-jwt.json"].Data)
	if strings.Contains(sum, sts) || !strings.Contains(sum, `"issuer": "https://mbot.acme.com"`) || !strings.Contains(sum, `"vault"`) {
		t.Errorf("workload-identity-jwt.json:\n%s", sum)
	}

	for _, tc := range []struct {
		name string
		g    *identity.OutputResponse
	}{
		{"no svid", grant()},
		{"another subject", grant(identity.JWTSVID{Audience: "vault", Token: sign("spiffe://acme/bot/other", iss, "vault")})},
		{"another audience than named", grant(identity.JWTSVID{Audience: "vault", Token: sts})},
		{"another issuer", grant(identity.JWTSVID{Audience: "vault", Token: sign(id, "https://evil", "vault")})},
		{"not a jwt", grant(identity.JWTSVID{Audience: "vault", Token: "a.b.c\nexport X=1"})},
		{"audience twice", grant(identity.JWTSVID{Audience: "vault", Token: vault}, identity.JWTSVID{Audience: "vault", Token: vault})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if files, err := (jwtOutput{}).render("/ci/jwt", &identity.Keys{}, resp, tc.g); err == nil {
				t.Errorf("rendered %d files", len(files))
			}
		})
	}
}
