package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// testIssuedCertificates: the certificates of an admitted join, a renewal
// (an audit record alone) and a token join starting its chain are recorded
// with their audit record's id, bot, join token and claims, on every path
// that writes one; a replayed join records none; the unexpired ones are
// queried; expired ones are pruned; another handle sees them all.
func testIssuedCertificates(t *testing.T, db *testDB) {
	ctx := context.Background()
	st := db.open(t)
	now := time.Now().Truncate(time.Second).UTC()
	soon, later := now.Add(time.Hour), now.Add(8*time.Hour)

	join := joinEvent("deployer")
	join.Certificates = []store.IssuedCertificate{
		{CA: "ssh-user-ca", Serial: "1234567890123", NotAfter: soon, Output: "identity", OutputType: "identity", Roles: []string{"deploy"}},
		{CA: "tls-ca", Serial: "ABCDEF0123", NotAfter: soon, Output: "identity", OutputType: "identity", Roles: []string{"deploy"}},
	}
	if err := st.RecordJoin(ctx, "proof-1", soon, join); err != nil {
		t.Fatal(err)
	}
	replayed := joinEvent("deployer")
	replayed.Certificates = []store.IssuedCertificate{{CA: "tls-ca", Serial: "FFFF", NotAfter: soon}}
	if err := st.RecordJoin(ctx, "proof-1", soon, replayed); !errors.Is(err, store.ErrReplay) {
		t.Fatalf("replayed RecordJoin: %v, want ErrReplay", err)
	}
	renewal := &store.AuditEvent{Event: "renew", Allowed: true, Bot: "builder", JoinToken: "builder-token", Method: "token",
		Claims: map[string]string{"generation": "2"},
		Certificates: []store.IssuedCertificate{{CA: "database-client-ca", Serial: "0BEEF", NotAfter: later, BotInstance: "chain-1",
			Output: "db", OutputType: "database"}}}
	if err := st.Audit(ctx, renewal); err != nil {
		t.Fatal(err)
	}
	tokenJoin := &store.AuditEvent{Event: "join", Allowed: true, Bot: "builder", JoinToken: "builder-token", Method: "token",
		Certificates: []store.IssuedCertificate{{CA: "spiffe-ca", Serial: "5EED", NotAfter: now.Add(-time.Minute), BotInstance: "chain-2"}}}
	if err := st.RecordJoinStartingChain(ctx, "proof-2", soon, tokenJoin, store.Chain{Bot: "builder", JoinToken: "builder-token", ID: "chain-2"}); err != nil {
		t.Fatal(err)
	}
	if n := db.rows(t, "issued_certificates"); n != 4 {
		t.Fatalf("issued_certificates holds %d rows, want 4 (none for the replay)", n)
	}

	audit, err := st.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]int64{}
	for _, ev := range audit {
		ids[ev.Event+"/"+ev.Bot] = ev.ID
	}

	other := db.open(t) // another process or replica
	valid, err := other.IssuedCertificates(ctx, store.IssuedFilter{ValidAt: now})
	if err != nil {
		t.Fatal(err)
	}
	want := []store.IssuedCertificate{
		{CA: "database-client-ca", Serial: "0BEEF", NotAfter: later, Output: "db", OutputType: "database", Bot: "builder",
			JoinToken: "builder-token", BotInstance: "chain-1", Claims: map[string]string{"generation": "2"}, Issued: renewal.Time, AuditID: ids["renew/builder"]},
		{CA: "ssh-user-ca", Serial: "1234567890123", NotAfter: soon, Output: "identity", OutputType: "identity", Bot: "deployer",
			JoinToken: "github-deploy", Roles: []string{"deploy"}, Claims: join.Claims, Issued: join.Time, AuditID: ids["join/deployer"]},
		{CA: "tls-ca", Serial: "ABCDEF0123", NotAfter: soon, Output: "identity", OutputType: "identity", Bot: "deployer",
			JoinToken: "github-deploy", Roles: []string{"deploy"}, Claims: join.Claims, Issued: join.Time, AuditID: ids["join/deployer"]},
	}
	for i := range valid {
		valid[i].NotAfter, valid[i].Issued = valid[i].NotAfter.UTC(), valid[i].Issued.UTC()
	}
	for i := range want {
		want[i].Issued = want[i].Issued.UTC()
	}
	if !reflect.DeepEqual(valid, want) {
		t.Fatalf("unexpired certificates:\n got %+v\nwant %+v", valid, want)
	}
	if ids["join/deployer"] == 0 || ids["renew/builder"] == 0 {
		t.Fatalf("audit ids missing: %v", ids)
	}

	bySerial, err := other.IssuedCertificates(ctx, store.IssuedFilter{Serial: "5EED"})
	if err != nil {
		t.Fatal(err)
	}
	if len(bySerial) != 1 || bySerial[0].CA != "spiffe-ca" || bySerial[0].BotInstance != "chain-2" || bySerial[0].AuditID != ids["join/builder"] {
		t.Fatalf("certificate 5EED: %+v", bySerial)
	}
	byCA, err := other.IssuedCertificates(ctx, store.IssuedFilter{CA: "tls-ca", Bot: "deployer", ValidAt: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(byCA) != 1 || byCA[0].Serial != "ABCDEF0123" {
		t.Fatalf("deployer's tls-ca certificates: %+v", byCA)
	}

	n, err := st.PruneIssuedCertificates(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || db.rows(t, "issued_certificates") != 3 {
		t.Fatalf("pruned %d, %d left; want the expired one pruned and 3 left", n, db.rows(t, "issued_certificates"))
	}
	if n, err = st.PruneIssuedCertificates(ctx, later.Add(time.Second)); err != nil || n != 3 {
		t.Fatalf("pruning after every expiry: %d, %v", n, err)
	}
}
