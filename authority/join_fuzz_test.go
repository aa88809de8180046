package authority

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"

	"github.com/mbot-dev/mbot/authority/store"
	"github.com/mbot-dev/mbot/identity"
)

// FuzzJoinRequest decodes arbitrary bytes as handleJoin does and runs the
// request shape checks that come before any lookup or verification. It must
// never panic; every refusal is an *identity.Error with a 4xx code and a
// message free of control characters (it reaches the log and terminals);
// and the audit record of the refusal, once bounded, stays within the
// store's bounds whatever the request carried.
func FuzzJoinRequest(f *testing.F) {
	keys, err := identity.NewKeys()
	if err != nil {
		f.Fatal(err)
	}
	good := identity.JoinRequest{JoinToken: "github-deploy", Method: "github", TTLSeconds: 3600,
		Proof:   "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJpc3MiOiJodHRwczovL3Rva2VuLmFjdGlvbnMuZ2l0aHVidXNlcmNvbnRlbnQuY29tIiwicmVwb3NpdG9yeSI6ImFjbWUvYXBwIn0.c2ln",
		Outputs: []identity.OutputRequest{{Name: "identity", Roles: []string{"deploy"}, SSHPublicKey: keys.SSHPublicKey(), TLSPublicKey: keys.TLSPublicKeyPEM()}}}
	seed := func(edit func(r *identity.JoinRequest)) {
		r := good
		r.Outputs = append([]identity.OutputRequest(nil), good.Outputs...)
		if edit != nil {
			edit(&r)
		}
		data, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	seed(nil)
	seed(func(r *identity.JoinRequest) { r.JoinToken = "github-deploy\n\x1b[2J" })
	seed(func(r *identity.JoinRequest) { r.Method = "token" })
	seed(func(r *identity.JoinRequest) { r.Outputs = append(r.Outputs, r.Outputs[0]) })
	seed(func(r *identity.JoinRequest) { r.Outputs[0].Name = "ssh\nbot=admin" })
	seed(func(r *identity.JoinRequest) { r.Outputs[0].SSHPublicKey = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ" })
	seed(func(r *identity.JoinRequest) { r.TTLSeconds = -1 })
	seed(func(r *identity.JoinRequest) { r.Outputs = nil })
	f.Add([]byte(`{"join_token":"a","method":"github","proof":"x","outputs":[{"name":"b"}]}`))
	f.Add([]byte(`{"join_token":1}`))
	f.Add([]byte("not json"))

	f.Fuzz(func(t *testing.T, body []byte) {
		var req identity.JoinRequest
		ev := &store.AuditEvent{Event: "join", Remote: "192.0.2.1:40000"}
		var refusal error
		if err := decodeBody(httptest.NewRecorder(), httptest.NewRequest("POST", identity.PathJoin, bytes.NewReader(body)), &req); err != nil {
			refusal = identity.Errorf(identity.CodeBadRequest, "the request body is not a join request: %v", err)
		} else {
			ev.JoinToken, ev.Method = req.JoinToken, req.Method
			if _, err := parseOutputKeys(&req); err != nil {
				refusal = err
			}
		}
		if refusal == nil {
			// Passed the shape checks: the names are ones a record may carry as they are.
			if identity.CheckName("join_token", req.JoinToken) != nil || len(req.Proof) > maxProof || len(req.Outputs) > maxOutputs {
				t.Fatalf("admitted a request of a bad shape: %q %q", req.JoinToken, req.Method)
			}
			return
		}
		var ie *identity.Error
		if !errors.As(refusal, &ie) {
			t.Fatalf("refusal %v is a %T, not an *identity.Error", refusal, refusal)
		}
		if s := ie.Code.HTTPStatus(); s < 400 || s >= 500 {
			t.Fatalf("refusal %s answers %d, want 4xx", ie.Code, s)
		}
		if i := strings.IndexFunc(ie.Message, func(r rune) bool { return unicode.IsControl(r) }); i >= 0 {
			t.Fatalf("message carries control character %q: %q", ie.Message[i], ie.Message)
		}
		ev.Code, ev.Message = string(ie.Code), ie.Message
		ev.Bound()
		if len(ev.JoinToken) > store.MaxAuditName || len(ev.Method) > store.MaxAuditName || len(ev.Message) > store.MaxAuditMessage {
			t.Fatalf("bounded record has fields of %d, %d and %d bytes", len(ev.JoinToken), len(ev.Method), len(ev.Message))
		}
	})
}
