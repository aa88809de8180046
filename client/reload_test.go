package client

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReloadConfig: reload: is an argv list or a plain string split at
// spaces; a string with anything a shell would interpret, an empty or
// relative program, reload_timeout without reload, and owner: on a Secret
// are refused at the line, naming the field; a mistyped field gets the
// nearest one.
func TestReloadConfig(t *testing.T) {
	parse := func(fields string) (*Config, error) {
		return ParseConfig("mbot.yaml", []byte("outputs:\n  - type: database_server\n    destination: ./db\n    server_names: [db1.acme.internal]\n"+fields))
	}
	for _, tc := range []struct {
		fields  string
		argv    []string
		timeout time.Duration
	}{
		{"    reload: [pg_ctlcluster, \"15\", main, reload]\n", []string{"pg_ctlcluster", "15", "main", "reload"}, DefaultReloadTimeout},
		{"    reload: systemctl  reload postgresql\n    reload_timeout: 5s\n", []string{"systemctl", "reload", "postgresql"}, 5 * time.Second},
		{"    reload: [sh, -c, \"kill -HUP $(cat /run/pg.pid) && echo ok\"]\n", []string{"sh", "-c", "kill -HUP $(cat /run/pg.pid) && echo ok"}, DefaultReloadTimeout},
		{"    reload: [/usr/bin/mariadb, --socket=/run/mysqld/mysqld.sock, -e, FLUSH SSL]\n", []string{"/usr/bin/mariadb", "--socket=/run/mysqld/mysqld.sock", "-e", "FLUSH SSL"}, DefaultReloadTimeout},
		{"    owner: postgres:ssl-cert\n", nil, DefaultReloadTimeout},
	} {
		cfg, err := parse(tc.fields)
		if err != nil {
			t.Errorf("%q: %v", tc.fields, err)
			continue
		}
		o := cfg.Outputs[0]
		if !slices.Equal(o.Reload, tc.argv) || o.reloadTimeout() != tc.timeout {
			t.Errorf("%q: reload %q timeout %s, want %q %s", tc.fields, o.Reload, o.reloadTimeout(), tc.argv, tc.timeout)
		}
	}
	for _, tc := range []struct{ fields, want string }{
		{"    reload: systemctl reload postgresql && echo done\n", `mbot.yaml:5: reload: "systemctl reload postgresql && echo done" holds "&", which only a shell understands`},
		{"    reload: kill -HUP $(cat /run/pg.pid)\n", `holds "$"`},
		{"    reload: \"pg_ctl reload -D '/var/lib/pg'\"\n", `holds "'"`},
		{"    reload: [\"\", reload]\n", "mbot.yaml:5: outputs[0].reload: starts with an empty word"},
		{"    reload: [bin/reload]\n", `outputs[0].reload: program "bin/reload" is a relative path`},
		{"    reload: {cmd: x}\n", "reload: is a command"},
		{"    reload_timeout: 10s\n", "outputs[0].reload_timeout: bounds the reload: command, which this output does not have"},
		{"    reload: [x]\n    reload_timeout: soon\n", `reload_timeout: "soon" is not a positive duration`},
		{"    reload_timout: 10s\n", `unknown field "reload_timout" in output 1 (type database_server) (did you mean reload_timeout?)`},
		{"    relaod: [x]\n", `(did you mean reload?)`},
		{"    owner: \":postgres\"\n", `outputs[0].owner: ":postgres" is not USER[:GROUP]`},
	} {
		_, err := parse(tc.fields)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.fields, err, tc.want)
		}
	}
	_, err := ParseConfig("mbot.yaml", []byte("outputs:\n  - destination: {type: kubernetes_secret, name: db}\n    owner: postgres\n"))
	if err == nil || !strings.Contains(err.Error(), "a Secret has no owner") {
		t.Errorf("owner on a Secret: %v", err)
	}
}
