package store_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/mbot-dev/mbot/authority/store"
)

// TestAuditRecordBounded stores records carrying what an unauthenticated
// caller can send and checks that each comes back within the bounds, says
// how much was cut, and that an honest record is stored as it was.
func testAuditRecordBounded(t *testing.T, db *testDB) {
	st := db.open(t)
	huge := strings.Repeat("a", 250<<10)
	manyClaims := map[string]string{}
	for i := range 1000 {
		manyClaims[fmt.Sprintf("claim%04d", i)] = strings.Repeat("v", 100)
	}
	cases := []struct {
		name      string
		ev        store.AuditEvent
		wantTrunc bool
	}{
		{"honest record", *joinEvent("deployer"), false},
		{"250 KB join token, method and remote", store.AuditEvent{Event: "join", JoinToken: huge, Method: huge, Remote: huge, Message: "there is no join token named " + huge}, true},
		{"1 MB claim value", store.AuditEvent{Event: "join", Claims: map[string]string{"repository": strings.Repeat("x", 1<<20)}}, true},
		{"250 KB claim key", store.AuditEvent{Event: "join", Claims: map[string]string{huge: "x", "repository": "acme/app"}}, true},
		{"1000 claims", store.AuditEvent{Event: "join", Claims: manyClaims}, true},
		{"1000 roles", store.AuditEvent{Event: "join", Roles: strings.Split(strings.Repeat("role,", 1000), ",")}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.ev
			in.Claims = maps.Clone(tc.ev.Claims)
			if err := st.Audit(t.Context(), &in); err != nil {
				t.Fatal(err)
			}
			evs, err := st.ListAudit(t.Context(), store.AuditFilter{Limit: 1})
			if err != nil {
				t.Fatal(err)
			}
			got := evs[0]
			raw, _ := json.Marshal(got)
			if len(raw) > 16<<10 {
				t.Errorf("stored record is %d bytes, want at most 16 KB", len(raw))
			}
			if !tc.wantTrunc {
				want := tc.ev
				want.ID, want.Time = got.ID, got.Time
				if !reflect.DeepEqual(got, want) {
					t.Errorf("honest record changed:\n got %+v\nwant %+v", got, want)
				}
				return
			}
			if got.TruncatedBytes == 0 {
				t.Error("truncated_bytes is 0; want how much was cut")
			}
			for _, f := range []string{got.JoinToken, got.Method, got.Remote, got.Event} {
				if len(f) > store.MaxAuditName {
					t.Errorf("a name field is %d bytes, want at most %d", len(f), store.MaxAuditName)
				}
			}
			if len(got.Message) > store.MaxAuditMessage {
				t.Errorf("message is %d bytes", len(got.Message))
			}
			size := 0
			for k, v := range got.Claims {
				size += len(k) + len(v)
				if len(k) > store.MaxAuditClaimKey || len(v) > store.MaxAuditClaimValue {
					t.Errorf("claim of %d+%d bytes kept", len(k), len(v))
				}
			}
			if len(got.Claims) > store.MaxAuditClaims || size > store.MaxAuditClaimsBytes {
				t.Errorf("%d claims of %d bytes kept", len(got.Claims), size)
			}
			if len(got.Roles) > store.MaxAuditList {
				t.Errorf("%d roles kept", len(got.Roles))
			}
			again := got
			again.Claims = maps.Clone(got.Claims)
			again.Bound()
			if !reflect.DeepEqual(again, got) {
				t.Error("bounding a bounded record changed it")
			}
		})
	}
}
