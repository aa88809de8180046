package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Resources of the database tests: a bot granted one database user and
// database name by a role, and a PostgreSQL and a MySQL server whose
// certificates come from mbot sign --format.
const (
	dbBot     = "migrator"
	dbToken   = "github-migrate"
	dbUser    = "ci_migrate"
	dbName    = "app"
	dbPG      = "prod-pg"
	dbMySQL   = "prod-my"
	dbHost    = "127.0.0.1"
	databases = `
---
kind: role
version: v1
metadata: {name: db-app}
spec:
  db_users: ["{{internal.db_user}}"]
  db_names: [` + dbName + `]
---
kind: role
version: v1
metadata: {name: db-admin}
spec:
  db_users: [postgres]
---
kind: bot
version: v1
metadata: {name: ` + dbBot + `}
spec:
  roles: [db-app, %[1]s]
  traits: {db_user: [` + dbUser + `, ci_other]}
---
kind: database
version: v1
metadata: {name: ` + dbPG + `}
spec:
  protocol: postgres
  uri: ` + dbHost + `:%[3]d
  ca_issued_by_authority: true
---
kind: database
version: v1
metadata: {name: ` + dbMySQL + `}
spec:
  protocol: mysql
  uri: ` + dbHost + `:%[4]d
  ca_issued_by_authority: true
---
kind: join_token
version: v1
metadata: {name: ` + dbToken + `}
spec:
  bot: ` + dbBot + `
  method: github
  github:
    issuer: %[2]s
    allow:
      - repository: acme/app
`
)

// databaseCluster is a cluster with the database resources; pgPort and
// myPort are where their servers listen (or will: the tests with real
// servers start them there).
type databaseCluster struct {
	*cluster
	pgPort, myPort int
}

func startDatabaseCluster(t *testing.T) *databaseCluster {
	t.Helper()
	dc := &databaseCluster{pgPort: freePort(t), myPort: freePort(t)}
	dc.cluster, _ = startClusterWith(t, func(c *cluster) string {
		return defaultResources(c) + fmt.Sprintf(databases, roleName, c.ci.URL, dc.pgPort, dc.myPort)
	})
	return dc
}

// signDatabaseServer runs mbot sign --format for a server at dbHost into
// a new directory and returns it and what mbot printed.
func (dc *databaseCluster) signDatabaseServer(t *testing.T, format string) (dir, printed string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), format+"-server")
	res := mustMbot(t, baseEnv(dc.home), "sign", "--config", dc.config, "--format", format, "--host", "localhost,"+dbHost, "--out", dir)
	return dir, res.stdout
}

// issueDatabases runs mbot issue with an identity output and one database
// output per database in dbs (name → output directory), and returns the result.
func (dc *databaseCluster) issueDatabases(t *testing.T, username string, dbs map[string]string, idDir string) result {
	t.Helper()
	work := t.TempDir()
	cfg := fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\noutputs:\n  - destination: %s\n", dc.url, dc.pin, dbToken, idDir)
	for _, db := range slices.Sorted(func(yield func(string) bool) {
		for k := range dbs {
			if !yield(k) {
				return
			}
		}
	}) {
		cfg += fmt.Sprintf("  - type: database\n    destination: %s\n    database: %s\n    username: %s\n    db_name: %s\n", dbs[db], db, username, dbName)
	}
	config := filepath.Join(work, "mbot.yaml")
	writeFile(t, config, cfg, 0o644)
	vars := gitHubJob(t, dc.cluster)
	return mbot(t, dc.jobEnv(vars), "issue", "--config", config)
}

// databaseSummary is the part of database.json the tests read.
type databaseSummary struct {
	Database string            `json:"database"`
	Protocol string            `json:"protocol"`
	Host     string            `json:"host"`
	Port     int               `json:"port"`
	Username string            `json:"username"`
	DBName   string            `json:"db_name"`
	Files    map[string]string `json:"files"`
}

func readDatabaseSummary(t *testing.T, dir string) databaseSummary {
	t.Helper()
	var s databaseSummary
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "database.json"))), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// DatabaseClientCommand is how a test connects with the stock client
// using only a database output's files: the command (psql or mysql, which
// prints the current user and exits) and the environment to add. The
// tests with real PostgreSQL and MariaDB servers run it.
func DatabaseClientCommand(t *testing.T, dir string) (cmd []string, env []string) {
	t.Helper()
	s := readDatabaseSummary(t, dir)
	switch s.Protocol {
	case "postgres":
		return []string{"psql", "-X", "-At", "-c", "SELECT current_user"},
			[]string{"PGSERVICEFILE=" + filepath.Join(dir, "pg_service.conf"), "PGSERVICE=" + s.Database}
	case "mysql":
		// MariaDB's client is mariadb; Debian ships the mysql name apart
		// (mariadb-client-compat) since trixie.
		client := "mysql"
		if _, err := exec.LookPath(client); err != nil {
			client = "mariadb"
		}
		return []string{client, "--defaults-extra-file=" + filepath.Join(dir, "my.cnf"), "-N", "-B", "-e", "select current_user()"}, nil
	}
	t.Fatalf("%s/database.json: protocol %q", dir, s.Protocol)
	return nil, nil
}

// TestDatabaseOutputs: mbot sign --format writes a server's credentials and
// prints its configuration; mbot issue writes database outputs beside an
// identity in one join; a TLS server set up as the printed configuration
// says admits the database output's certificate as its user and refuses
// the identity's; a user no role grants is refused with nothing written.
func TestDatabaseOutputs(t *testing.T) {
	dc := startDatabaseCluster(t)
	pgServer, pgConf := dc.signDatabaseServer(t, "postgres")
	for _, want := range []string{
		"ssl = on\n", "ssl_cert_file = '" + filepath.Join(pgServer, "server.crt") + "'\n", "ssl_key_file = '" + filepath.Join(pgServer, "server.key") + "'\n",
		"ssl_ca_file = '" + filepath.Join(pgServer, "client-ca.crt") + "'\n", "hostssl all all 0.0.0.0/0 cert\n", "--owner postgres",
	} {
		if !strings.Contains(pgConf, want) {
			t.Errorf("mbot sign --format postgres does not print %q:\n%s", want, pgConf)
		}
	}
	if st, err := os.Stat(filepath.Join(pgServer, "server.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("server.key: %v %v, want mode 0600", st, err)
	}
	myServer, myConf := dc.signDatabaseServer(t, "mysql")
	for _, want := range []string{"[mysqld]\n", "ssl-ca=\"" + filepath.Join(myServer, "client-ca.crt") + "\"\n", "require_secure_transport=ON\n", "REQUIRE SUBJECT '/CN=ci_migrate'"} {
		if !strings.Contains(myConf, want) {
			t.Errorf("mbot sign --format mysql does not print %q:\n%s", want, myConf)
		}
	}
	clientCA := mustMbot(t, baseEnv(dc.home), "authority", "export", "--type", "database-client-ca", "--config", dc.config).stdout
	if readFile(t, filepath.Join(pgServer, "client-ca.crt")) != clientCA {
		t.Error("client-ca.crt is not the exported database-client-ca")
	}

	work := t.TempDir()
	idDir, pgDir, myDir := filepath.Join(work, "id"), filepath.Join(work, "pg"), filepath.Join(work, "my")
	res := dc.issueDatabases(t, dbUser, map[string]string{dbPG: pgDir, dbMySQL: myDir}, idDir)
	if res.code != 0 {
		t.Fatalf("mbot issue: %s", res)
	}
	if want := "mbot: wrote " + pgDir + ": database prod-pg as user ci_migrate, valid until "; !strings.Contains(res.stderr, want) {
		t.Errorf("mbot issue does not say %q:\n%s", want, res.stderr)
	}
	for dir, files := range map[string][]string{
		pgDir: {"client.key", "client.crt", "ca.crt", "pg_service.conf", "env", "database.json"},
		myDir: {"client.key", "client.crt", "ca.crt", "my.cnf", "database.json"},
	} {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		slices.Sort(files)
		if !slices.Equal(names, files) {
			t.Errorf("%s holds %v, want %v", filepath.Base(dir), names, files)
		}
		s := readDatabaseSummary(t, dir)
		if s.Username != dbUser || s.DBName != dbName || s.Host != dbHost {
			t.Errorf("%s/database.json %+v", filepath.Base(dir), s)
		}
	}
	if s := readDatabaseSummary(t, pgDir); s.Port != dc.pgPort || s.Database != dbPG {
		t.Errorf("pg/database.json %+v", s)
	}
	env := readFile(t, filepath.Join(pgDir, "env"))
	for _, want := range []string{"export PGHOST='127.0.0.1'\n", fmt.Sprintf("export PGPORT='%d'\n", dc.pgPort), "export PGUSER='ci_migrate'\n",
		"export PGDATABASE='app'\n", "export PGSSLMODE='verify-full'\n", "export PGSSLROOTCERT='" + filepath.Join(pgDir, "ca.crt") + "'\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("pg/env lacks %q:\n%s", want, env)
		}
	}
	if cmd, vars := DatabaseClientCommand(t, pgDir); cmd[0] != "psql" || !slices.Contains(vars, "PGSERVICE="+dbPG) {
		t.Errorf("postgres client command %v %v", cmd, vars)
	}

	// The server as mbot sign configured it (its certificate, and only
	// client certificates of the database-client CA) over real TLS.
	serverCert, err := tls.LoadX509KeyPair(filepath.Join(pgServer, "server.crt"), filepath.Join(pgServer, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(pgServer, "client-ca.crt"))))
	ln, err := tls.Listen("tcp", fmt.Sprintf("%s:%d", dbHost, dc.pgPort), &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if tc := conn.(*tls.Conn); tc.Handshake() == nil {
					fmt.Fprint(conn, tc.ConnectionState().PeerCertificates[0].Subject.String())
				}
			}()
		}
	}()
	connect := func(certFile, keyFile string) (string, error) {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return "", err
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(pgDir, "ca.crt"))))
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: roots, ServerName: dbHost})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		return string(buf[:n]), err
	}
	if subject, err := connect(filepath.Join(pgDir, "client.crt"), filepath.Join(pgDir, "client.key")); err != nil || subject != "CN="+dbUser {
		t.Errorf("the database output's certificate: subject %q, %v", subject, err)
	}
	if subject, err := connect(filepath.Join(idDir, "tls.crt"), filepath.Join(idDir, "tls.key")); err == nil {
		t.Errorf("the identity output's certificate was admitted as %q", subject)
	}

	t.Run("refused", func(t *testing.T) {
		work := t.TempDir()
		idDir, pgDir := filepath.Join(work, "id"), filepath.Join(work, "pg")
		// An earlier run's outputs are there; the refused run removes them.
		if res := dc.issueDatabases(t, dbUser, map[string]string{dbPG: pgDir}, idDir); res.code != 0 {
			t.Fatalf("mbot issue: %s", res)
		}
		res := dc.issueDatabases(t, "postgres", map[string]string{dbPG: pgDir}, idDir)
		if res.code != 1 || !strings.Contains(res.stderr, "role_denied") || !strings.Contains(res.stderr, `database user "postgres"`) ||
			!strings.Contains(res.stderr, "role db-admin would grant it") {
			t.Errorf("mbot issue for a user no role of the bot grants: %s", res)
		}
		if !strings.Contains(res.stderr, "removed the earlier identity in "+idDir+", "+pgDir) {
			t.Errorf("mbot issue does not say it removed the earlier outputs:\n%s", res.stderr)
		}
		for _, dir := range []string{idDir, pgDir} {
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s written after a refusal: %v", filepath.Base(dir), err)
			}
		}
		joins := auditEvents(t, dc.cluster, "join")
		last := joins[len(joins)-1]
		if last.Allowed || last.Code != "role_denied" || last.Bot != dbBot {
			t.Errorf("audit record of the refusal: %+v", last)
		}
	})

	// Each refusal at issue time: exit 1, the message names what to grant
	// or which databases exist, an audit record, and no files.
	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name, database, user, dbname string
			code, want                   string
		}{
			{"unknown database", "prod-oracle", dbUser, "", "bad_request",
				`there is no database named "prod-oracle" on this authority (existing: ` + dbMySQL + ", " + dbPG + ")"},
			{"user no role grants", dbPG, "root", "", "role_denied",
				`no role of bot "` + dbBot + `" grants database user "root"; add it to the db_users of one of its roles`},
			{"db_name no role grants", dbPG, dbUser, "billing", "role_denied",
				`grants database name "billing"; add it to the db_names`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				work := t.TempDir()
				idDir, dbDir := filepath.Join(work, "id"), filepath.Join(work, "db")
				cfg := fmt.Sprintf("authority: %s\nca_pin: %s\ntoken: %s\noutputs:\n  - destination: %s\n"+
					"  - type: database\n    destination: %s\n    database: %s\n    username: %s\n", dc.url, dc.pin, dbToken, idDir, dbDir, tc.database, tc.user)
				if tc.dbname != "" {
					cfg += "    db_name: " + tc.dbname + "\n"
				}
				config := filepath.Join(work, "mbot.yaml")
				writeFile(t, config, cfg, 0o644)
				before := len(auditEvents(t, dc.cluster, "join"))
				res := mbot(t, dc.jobEnv(gitHubJob(t, dc.cluster)), "issue", "--config", config)
				if res.code != 1 || !strings.Contains(res.stderr, tc.code) || !strings.Contains(res.stderr, tc.want) {
					t.Errorf("mbot issue: %s\nwant exit 1, %s, %q", res, tc.code, tc.want)
				}
				for _, dir := range []string{idDir, dbDir} {
					if _, err := os.Stat(dir); !os.IsNotExist(err) {
						t.Errorf("%s written after a refusal: %v", filepath.Base(dir), err)
					}
				}
				joins := auditEvents(t, dc.cluster, "join")
				if len(joins) != before+1 {
					t.Fatalf("%d join audit records after the refusal, want %d", len(joins), before+1)
				}
				if last := joins[len(joins)-1]; last.Allowed || last.Code != tc.code || last.Bot != dbBot || len(last.Serials) != 0 {
					t.Errorf("audit record of the refusal: %+v", last)
				}
			})
		}
	})

	t.Run("get", func(t *testing.T) {
		out := mustMbot(t, baseEnv(dc.home), "get", "databases", "--config", dc.config).stdout
		if !strings.Contains(out, dbPG) || !strings.Contains(out, "postgres") || !strings.Contains(out, "database-server-ca") {
			t.Errorf("mbot get databases:\n%s", out)
		}
		out = mustMbot(t, baseEnv(dc.home), "get", "bots", dbBot, "--config", dc.config).stdout
		if !strings.Contains(out, "db_users: "+dbUser) || !strings.Contains(out, "db_names: "+dbName) {
			t.Errorf("mbot get bots %s does not show the database grants:\n%s", dbBot, out)
		}
	})
}
