// Package trust is a leaf authority's trust in root authorities (SPEC §8):
// the role map of each trusted_cluster, the root's CA bundle fetched over
// a pinned connection and kept fresh, the root's bot locks pushed down the
// tunnel, and the verification of an exchange request against all that.
package trust

import (
	"regexp"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// RoleMap turns root roles into leaf roles, entry by entry, as Teleport's
// role_map: every entry whose remote matches a root role adds its local
// roles, with $1, $2 ... replaced by the match's captures.
type RoleMap []mapping

type mapping struct {
	remote *regexp.Regexp
	local  []string
}

// CompileRoleMap compiles a trusted_cluster's role_map (checked when the
// resource was read).
func CompileRoleMap(entries []resources.RoleMapping) (RoleMap, error) {
	m := make(RoleMap, 0, len(entries))
	for _, e := range entries {
		re, err := resources.CompileRemoteRole(e.Remote)
		if err != nil {
			return nil, err
		}
		m = append(m, mapping{remote: re, local: e.Local})
	}
	return m, nil
}

// Map returns the leaf roles that the root roles map to, in order and
// without repeats, and the root roles that map to none. A local role that
// expands to something other than a role name is dropped.
func (m RoleMap) Map(remote []string) (local, unmapped []string) {
	for _, r := range remote {
		mapped := false
		for _, e := range m {
			subs := e.remote.FindStringSubmatchIndex(r)
			if subs == nil {
				continue
			}
			for _, tmpl := range e.local {
				l := string(e.remote.ExpandString(nil, tmpl, r, subs))
				if strings.Contains(tmpl, "$") && identity.CheckName("role", l) != nil {
					continue
				}
				mapped = true
				if !slices.Contains(local, l) {
					local = append(local, l)
				}
			}
		}
		if !mapped {
			unmapped = append(unmapped, r)
		}
	}
	return local, unmapped
}
