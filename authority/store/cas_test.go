package store_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/store"
)

// testReplaceCAs replaces CA rows only while they hold what was read, all
// or none, and (SQLite) leaves nothing of the old material in the database
// files. PostgreSQL keeps dead rows until VACUUM: operators run VACUUM FULL
// after sealing keys (docs/high-availability.md).
func testReplaceCAs(t *testing.T, db *testDB) {
	ctx := t.Context()
	st := db.open(t)
	var err error
	oldA, oldB := bytes.Repeat([]byte("old-material-of-ca-a "), 40), []byte("old-b")
	for name, m := range map[string][]byte{"a": oldA, "b": oldB} {
		if _, err := st.CreateCA(ctx, name, m); err != nil {
			t.Fatal(err)
		}
	}
	err = st.ReplaceCAs(ctx, []store.CAChange{{Name: "a", Old: oldA, New: []byte("new-a")}, {Name: "b", Old: []byte("stale"), New: []byte("new-b")}})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a change of a row read stale: %v, want ErrConflict", err)
	}
	if rows, _ := st.ListCAs(ctx); !bytes.Equal(rows["a"], oldA) {
		t.Error("a change was applied although another in the same call conflicted")
	}
	if err := st.ReplaceCAs(ctx, []store.CAChange{{Name: "a", Old: oldA, New: []byte("new-a")}}); err != nil {
		t.Fatal(err)
	}
	rows, err := st.ListCAs(ctx)
	if err != nil || string(rows["a"]) != "new-a" || !bytes.Equal(rows["b"], oldB) || len(rows) != 2 {
		t.Fatalf("ListCAs = %q, %v", rows, err)
	}
	if db.dir == "" {
		return
	}
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(filepath.Join(db.dir, store.FileName+suffix))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte("old-material-of-ca-a")) {
			t.Errorf("the replaced material is still in %s%s", store.FileName, suffix)
		}
	}
}

// testCARotationRows: a rotation is started once, moves only from the
// phase it is in, is seen by another handle, and finishing it makes the
// next CA the current one.
func testCARotationRows(t *testing.T, db *testDB) {
	ctx := t.Context()
	st, other := db.open(t), db.open(t)
	if _, err := st.CreateCA(ctx, "tls", []byte("current")); err != nil {
		t.Fatal(err)
	}
	v0, _ := st.ResourcesVersion(ctx)
	now := time.Unix(1_800_000_000, 0)
	r := store.CARotation{CA: "tls", Phase: "init", Grace: time.Hour, Started: now, Updated: now}
	if err := st.StartCARotation(ctx, r, []byte("next")); err != nil {
		t.Fatal(err)
	}
	if err := st.StartCARotation(ctx, r, []byte("another")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second start: %v, want ErrConflict", err)
	}
	if v1, _ := other.ResourcesVersion(ctx); v1 == v0 {
		t.Error("starting a rotation did not change the resources version other processes watch")
	}
	got, err := other.CARotations(ctx)
	if err != nil || len(got) != 1 || got[0] != r {
		t.Fatalf("CARotations = %+v, %v; want %+v", got, err, r)
	}
	if next, err := other.CA(ctx, store.NextCAName("tls")); err != nil || string(next) != "next" {
		t.Errorf("next CA = %q, %v", next, err)
	}
	r.Phase, r.Updated, r.NewSignsSince = "update_clients", now.Add(time.Minute), now.Add(time.Minute)
	if err := st.SetCARotationPhase(ctx, "update_servers", r); !errors.Is(err, store.ErrConflict) {
		t.Errorf("a step from a phase it is not in: %v, want ErrConflict", err)
	}
	if err := st.SetCARotationPhase(ctx, "init", r); err != nil {
		t.Fatal(err)
	}
	if got, _ := other.CARotations(ctx); len(got) != 1 || got[0] != r {
		t.Errorf("after the step CARotations = %+v, want %+v", got, r)
	}
	if err := st.FinishCARotation(ctx, "tls", "init"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("finishing from a phase it is not in: %v, want ErrConflict", err)
	}
	if err := st.FinishCARotation(ctx, "tls", "update_clients"); err != nil {
		t.Fatal(err)
	}
	rows, err := other.ListCAs(ctx)
	if err != nil || len(rows) != 1 || string(rows["tls"]) != "next" {
		t.Errorf("after the rotation the CA rows are %q, %v; want only tls = next", rows, err)
	}
	if got, _ := other.CARotations(ctx); len(got) != 0 {
		t.Errorf("a finished rotation is still listed: %+v", got)
	}
}
