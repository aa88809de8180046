package store

import (
	"sort"

	"github.com/mbot-dev/mbot/identity"
)

// An audit record holds values an unauthenticated caller chose (the join
// token name and method it sent, the claims of its proof, its address) and
// messages built from them. Each is cut to the bound below before the
// record is stored or logged, so that one request adds at most a few
// kilobytes to data_dir whatever it carries; TruncatedBytes says how much
// was dropped. Valid names are at most identity.MaxNameLen bytes and real
// claim sets a few hundred bytes, so the bounds never cut an honest record.
const (
	// MaxAuditName bounds the event, code, bot, join token, method and
	// remote address, and each role and serial.
	MaxAuditName = 128
	// MaxAuditMessage bounds the message.
	MaxAuditMessage = 2048
	// MaxAuditClaims bounds how many claims are kept; the rest are dropped
	// in key order.
	MaxAuditClaims = 64
	// MaxAuditClaimKey and MaxAuditClaimValue bound each claim.
	MaxAuditClaimKey   = 64
	MaxAuditClaimValue = 512
	// MaxAuditClaimsBytes bounds the claims' keys and values together.
	MaxAuditClaimsBytes = 4096
	// MaxAuditList bounds how many roles and serials are kept.
	MaxAuditList = 64
)

// truncMark is room for identity.Truncate's "…(+N bytes)" note, so that a
// cut value stays within its bound and bounding twice changes nothing.
const truncMark = 24

// Bound cuts every field of ev to its bound and adds what it dropped to
// ev.TruncatedBytes. Bounding a bounded record changes nothing. The store
// bounds every record it writes; callers that log a record's fields call
// Bound first, so that the log line carries the same bounded values.
func (ev *AuditEvent) Bound() {
	clip := func(s *string, n int) {
		if len(*s) <= n {
			return
		}
		cut := identity.Truncate(*s, n-truncMark)
		ev.TruncatedBytes += len(*s) - len(cut)
		*s = cut
	}
	for _, f := range []*string{&ev.Event, &ev.Code, &ev.Bot, &ev.JoinToken, &ev.Method, &ev.Remote} {
		clip(f, MaxAuditName)
	}
	clip(&ev.Message, MaxAuditMessage)
	clipList := func(list *[]string) {
		if len(*list) > MaxAuditList {
			for _, s := range (*list)[MaxAuditList:] {
				ev.TruncatedBytes += len(s)
			}
			*list = (*list)[:MaxAuditList]
		}
		for i := range *list {
			clip(&(*list)[i], MaxAuditName)
		}
	}
	clipList(&ev.Roles)
	clipList(&ev.Serials)
	clipList(&ev.Outputs)
	ev.boundClaims()
}

// boundClaims keeps the claims, in key order, while they fit
// MaxAuditClaims and MaxAuditClaimsBytes, each cut to its own bound.
func (ev *AuditEvent) boundClaims() {
	if len(ev.Claims) == 0 {
		return
	}
	keys := make([]string, 0, len(ev.Claims))
	size := 0
	for k, v := range ev.Claims {
		keys = append(keys, k)
		size += len(k) + len(v)
	}
	if len(keys) <= MaxAuditClaims && size <= MaxAuditClaimsBytes && !anyLonger(ev.Claims) {
		return
	}
	sort.Strings(keys)
	bounded := make(map[string]string, min(len(keys), MaxAuditClaims))
	total := 0
	for _, k := range keys {
		v := ev.Claims[k]
		bk, bv := k, v
		if len(bk) > MaxAuditClaimKey {
			bk = identity.Truncate(bk, MaxAuditClaimKey-truncMark)
		}
		if len(bv) > MaxAuditClaimValue {
			bv = identity.Truncate(bv, MaxAuditClaimValue-truncMark)
		}
		_, taken := bounded[bk]
		if taken || len(bounded) >= MaxAuditClaims || total+len(bk)+len(bv) > MaxAuditClaimsBytes {
			ev.TruncatedBytes += len(k) + len(v)
			continue
		}
		ev.TruncatedBytes += len(k) + len(v) - len(bk) - len(bv)
		bounded[bk] = bv
		total += len(bk) + len(bv)
	}
	ev.Claims = bounded
}

func anyLonger(claims map[string]string) bool {
	for k, v := range claims {
		if len(k) > MaxAuditClaimKey || len(v) > MaxAuditClaimValue {
			return true
		}
	}
	return false
}
