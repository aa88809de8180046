package client

import (
	"strings"
	"testing"
	"time"
)

func TestDaemonSettings(t *testing.T) {
	withInterval := writeConfig(t, "authority: https://a.example:8443\ntoken: t\nttl: 30m\nrenewal_interval: 5m\noutputs: [{destination: ./out}]\n")
	withoutInterval := writeConfig(t, "authority: https://a.example:8443\ntoken: t\nttl: 30m\noutputs: [{destination: ./out}]\n")
	base := IssueOptions{Authority: "https://a.example:8443", Token: "t"}
	for _, tc := range []struct {
		name    string
		o       DaemonOptions
		want    time.Duration
		wantErr []string
	}{
		{"default: a third of the default TTL", DaemonOptions{IssueOptions: base}, 20 * time.Minute, nil},
		{"a third of --ttl", DaemonOptions{IssueOptions: withTTL(base, 3*time.Minute)}, time.Minute, nil},
		{"flag", DaemonOptions{IssueOptions: base, RenewalInterval: 10 * time.Minute}, 10 * time.Minute, nil},
		{"mbot.yaml", DaemonOptions{IssueOptions: IssueOptions{Config: withInterval}}, 5 * time.Minute, nil},
		{"flag over mbot.yaml", DaemonOptions{IssueOptions: IssueOptions{Config: withInterval}, RenewalInterval: 2 * time.Minute}, 2 * time.Minute, nil},
		{"a third of mbot.yaml's ttl", DaemonOptions{IssueOptions: IssueOptions{Config: withoutInterval}}, 10 * time.Minute, nil},
		{"not below the TTL", DaemonOptions{IssueOptions: base, RenewalInterval: time.Hour}, 0,
			[]string{"--renewal-interval", "MBOT_RENEWAL_INTERVAL", "1h0m0s", "shorter than --ttl"}},
		{"not below the TTL of mbot.yaml", DaemonOptions{IssueOptions: IssueOptions{Config: writeConfig(t, "authority: https://a.example:8443\ntoken: t\nttl: 10m\nrenewal_interval: 10m\noutputs: [{destination: ./out}]\n")}}, 0,
			[]string{"renewal_interval in", "mbot.yaml", "shorter than --ttl"}},
		{"a JWT-SVID output renews before its hour ends", DaemonOptions{IssueOptions: IssueOptions{Config: writeConfig(t,
			"authority: https://a.example:8443\ntoken: t\nttl: 8h\noutputs: [{destination: ./out}, {type: workload-identity-jwt, destination: ./jwt, audiences: [x]}]\n")}},
			20 * time.Minute, nil},
		{"a JWT-SVID output needs renewals within the hour", DaemonOptions{IssueOptions: IssueOptions{Config: writeConfig(t,
			"authority: https://a.example:8443\ntoken: t\nttl: 8h\nrenewal_interval: 2h\noutputs: [{destination: ./out}, {type: workload-identity-jwt, destination: ./jwt, audiences: [x]}]\n")}},
			0, []string{"renewal_interval in", "not shorter than a JWT-SVID lives (1h0m0s)"}},
		{"not too often", DaemonOptions{IssueOptions: base, RenewalInterval: time.Millisecond}, 0, []string{"too short"}},
		{"the settings of mbot issue are checked", DaemonOptions{IssueOptions: IssueOptions{Token: "t"}}, 0, []string{"--authority"}},
		{"bad renewal_interval", DaemonOptions{IssueOptions: IssueOptions{Config: writeConfig(t, "renewal_interval: soon\noutputs: [{destination: ./out}]\n")}}, 0,
			[]string{"mbot.yaml:1:", "renewal_interval", `"soon"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := resolveSettings(tc.o)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("resolved to %s, want an error", s.interval)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.interval != tc.want {
				t.Errorf("renewal interval %s, want %s", s.interval, tc.want)
			}
			if len(s.dirs) != len(s.issue.Outputs) || !strings.HasPrefix(s.dirs[0], "/") {
				t.Errorf("destinations %v for outputs %+v", s.dirs, s.issue.Outputs)
			}
		})
	}
}

func withTTL(o IssueOptions, ttl time.Duration) IssueOptions {
	o.TTL = ttl
	return o
}
