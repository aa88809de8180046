package identity

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// LookupOwner reads USER[:GROUP] (names or numeric ids; the group defaults
// to the user's primary group), as mbot sign --owner and an output's
// owner: take it. An empty owner is none (nil).
func LookupOwner(owner string) (*Owner, error) {
	if owner == "" {
		return nil, nil
	}
	name, group, hasGroup := strings.Cut(owner, ":")
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("%s: there is no user %s on this host", Quote(owner), Quote(name))
		}
	}
	var o Owner
	o.UID, _ = strconv.Atoi(u.Uid)
	o.GID, _ = strconv.Atoi(u.Gid)
	if hasGroup {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return nil, fmt.Errorf("%s: there is no group %s on this host", Quote(owner), Quote(group))
			}
		}
		o.GID, _ = strconv.Atoi(g.Gid)
	}
	return &o, nil
}
