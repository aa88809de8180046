package policy_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mbot-dev/mbot/authority/policy"
	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// TestResolveGrantRechecksLogins builds resources in memory, past the
// loader's checks (as a resource stored by an older version would be), and
// checks that no expanded login that is not a user name is ever granted.
func TestResolveGrantRechecksLogins(t *testing.T) {
	cases := []struct {
		name   string
		logins []string
		traits map[string][]string
		want   string
	}{
		{"trait with a newline", []string{"{{internal.logins}}"},
			map[string][]string{"logins": {"ubuntu", "ubuntu\n    ProxyCommand touch /tmp/x"}}, `"ubuntu\n    ProxyCommand`},
		{"trait with a comma", []string{"{{internal.logins}}"}, map[string][]string{"logins": {"root,admin"}}, `"root,admin"`},
		{"trait that is a wildcard", []string{"svc-{{internal.team}}"}, map[string][]string{"team": {"*"}}, `"svc-*"`},
		{"trait that makes a login too long", []string{"{{internal.logins}}-ro"}, map[string][]string{"logins": {strings.Repeat("a", 30)}}, "not a valid user name"},
		{"literal login with a space", []string{"ubuntu root"}, nil, `"ubuntu root"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			role := &resources.Role{Metadata: resources.Metadata{Name: "deploy"}, Spec: resources.RoleSpec{Logins: tc.logins}}
			bot := &resources.Bot{Metadata: resources.Metadata{Name: "deployer"}, Spec: resources.BotSpec{Roles: []string{"deploy"}, Traits: tc.traits}}
			set := &resources.Set{Roles: map[string]*resources.Role{"deploy": role}, Bots: map[string]*resources.Bot{"deployer": bot}}
			g, err := policy.ResolveGrant(set, bot, nil, time.Hour, 24*time.Hour)
			var ie *identity.Error
			if !errors.As(err, &ie) || ie.Code != identity.CodeRoleDenied {
				t.Fatalf("ResolveGrant = %+v, %v; want role_denied", g, err)
			}
			for _, w := range []string{`role "deploy"`, `bot "deployer"`, tc.want} {
				if !strings.Contains(ie.Message, w) {
					t.Errorf("message %q does not mention %q", ie.Message, w)
				}
			}
			if strings.ContainsAny(ie.Message, "\n\x1b") {
				t.Errorf("message carries a control character: %q", ie.Message)
			}
		})
	}
}
