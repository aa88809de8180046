package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// issuedSchema keeps every certificate the authority issued until it
// expires: what revocation lists are made from (a lock revokes the
// unexpired certificates it covers) and what mbot audit --serial finds.
// Times are Unix nanoseconds. record is the IssuedCertificate as JSON.
const issuedSchema = `
CREATE TABLE IF NOT EXISTS issued_certificates (ca TEXT NOT NULL, serial TEXT NOT NULL, not_after BIGINT NOT NULL,
	bot TEXT NOT NULL, bot_instance TEXT NOT NULL, join_token TEXT NOT NULL, audit_id BIGINT NOT NULL, record TEXT NOT NULL,
	PRIMARY KEY (ca, serial));
CREATE INDEX IF NOT EXISTS issued_certificates_not_after ON issued_certificates (not_after);
CREATE INDEX IF NOT EXISTS issued_certificates_serial ON issued_certificates (serial);
`

// IssuedCertificate is one certificate the authority issued (a join, a
// renewal, an exchange on a leaf, mbot sign), kept until it expires. It is
// recorded with the audit record of its issuance (AuditEvent.Certificates),
// in the same transaction, and carries that record's bot, join token,
// identifying claims and id.
type IssuedCertificate struct {
	// CA is the CA that signed it, named as mbot authority export --type
	// names it: ssh-user-ca, ssh-host-ca, tls-ca, database-client-ca,
	// database-server-ca, kubernetes-client-ca, spiffe-ca; jwt-jwks for a
	// JWT-SVID, whose Serial is its jti.
	CA string `json:"ca"`
	// Serial is the SSH certificate's serial in decimal, or the X.509
	// certificate's in upper-case hexadecimal, as the audit log writes them
	// (without its ssh:/tls: prefix).
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	// Output is the output's name and type; empty for mbot sign.
	Output     string `json:"output,omitempty"`
	OutputType string `json:"output_type,omitempty"`
	// Bot, JoinToken, Claims and AuditID are the audit record's: the store
	// sets them from the AuditEvent the certificate is recorded with.
	Bot       string `json:"bot,omitempty"`
	JoinToken string `json:"join_token,omitempty"`
	// BotInstance is the renewal chain of a token join (its bot instance id);
	// empty for joins that renew by joining again.
	BotInstance string            `json:"bot_instance,omitempty"`
	Roles       []string          `json:"roles,omitempty"`
	Claims      map[string]string `json:"claims,omitempty"`
	Issued      time.Time         `json:"issued"`
	AuditID     int64             `json:"audit_id,omitempty"`
}

// IssuedFilter narrows IssuedCertificates; zero fields match every certificate.
type IssuedFilter struct {
	// ValidAt keeps the certificates that have not expired at this time.
	ValidAt time.Time
	CA      string
	Serial  string
	Bot     string
	// AuditID keeps the certificates issued with that audit record.
	AuditID int64
	Limit   int
}

// issuedRows are ev's certificates as the issued_certificates table holds
// them: stamped with the event's bot, join token, claims and time (the
// event is bound already), their own lists bound like the event's.
func issuedRows(ev *AuditEvent) ([]issuedRow, error) {
	rows := make([]issuedRow, 0, len(ev.Certificates))
	for i := range ev.Certificates {
		c := &ev.Certificates[i]
		c.Bot, c.JoinToken, c.Claims, c.Issued = ev.Bot, ev.JoinToken, ev.Claims, ev.Time
		if len(c.Roles) > MaxAuditList {
			c.Roles = c.Roles[:MaxAuditList]
		}
		record, err := json.Marshal(c)
		if err != nil {
			return nil, err
		}
		rows = append(rows, issuedRow{CA: c.CA, Serial: c.Serial, NotAfter: c.NotAfter.UnixNano(), BotInstance: c.BotInstance, Record: string(record)})
	}
	return rows, nil
}

// issuedRow is one row of issued_certificates but its bot, join token and
// audit id, which are the event's (the JSON names are PostgreSQL's
// jsonb_to_recordset columns).
type issuedRow struct {
	CA          string `json:"ca"`
	Serial      string `json:"serial"`
	NotAfter    int64  `json:"not_after"`
	BotInstance string `json:"bot_instance"`
	Record      string `json:"record"`
}

// insertIssuedSQL records one issued certificate. Serials are random (64
// bits for SSH, 128 for X.509): a repeat is a certificate recorded twice,
// not a second one.
const insertIssuedSQL = `INSERT INTO issued_certificates (ca, serial, not_after, bot, bot_instance, join_token, audit_id, record)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (ca, serial) DO NOTHING`

// insertIssued records ev's certificates (rows, from issuedRows) with stmt
// (insertIssuedSQL prepared in the transaction), under the audit record auditID.
func insertIssued(ctx context.Context, stmt *sql.Stmt, ev *AuditEvent, rows []issuedRow, auditID int64) error {
	for _, r := range rows {
		if _, err := stmt.ExecContext(ctx, r.CA, r.Serial, r.NotAfter, ev.Bot, r.BotInstance, ev.JoinToken, auditID, r.Record); err != nil {
			return err
		}
	}
	return nil
}

// IssuedCertificates lists the recorded certificates f matches, the
// latest to expire first.
func (s *sqlStore) IssuedCertificates(ctx context.Context, f IssuedFilter) ([]IssuedCertificate, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if !f.ValidAt.IsZero() {
		where = append(where, "not_after > "+arg(f.ValidAt.UnixNano()))
	}
	if f.CA != "" {
		where = append(where, "ca = "+arg(f.CA))
	}
	if f.Serial != "" {
		where = append(where, "serial = "+arg(f.Serial))
	}
	if f.Bot != "" {
		where = append(where, "bot = "+arg(f.Bot))
	}
	if f.AuditID != 0 {
		where = append(where, "audit_id = "+arg(f.AuditID))
	}
	q := `SELECT record, audit_id FROM issued_certificates`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY not_after DESC, ca, serial"
	if f.Limit > 0 {
		q += " LIMIT " + strconv.Itoa(f.Limit)
	}
	out, err := func() ([]IssuedCertificate, error) {
		rows, err := s.read.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out []IssuedCertificate
		for rows.Next() {
			var (
				record []byte
				c      IssuedCertificate
			)
			if err := rows.Scan(&record, &c.AuditID); err != nil {
				return nil, err
			}
			if err := json.Unmarshal(record, &c); err != nil {
				return nil, err
			}
			out = append(out, c)
		}
		return out, rows.Err()
	}()
	return out, s.wrap("reading issued certificates", err)
}

// PruneIssuedCertificates forgets the certificates that expired before
// before: an expired certificate is refused for its expiry, so no
// revocation list needs it.
func (s *sqlStore) PruneIssuedCertificates(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.write.ExecContext(ctx, `DELETE FROM issued_certificates WHERE not_after < $1`, before.UnixNano())
	if err != nil {
		return 0, s.wrap("pruning issued certificates", err)
	}
	return res.RowsAffected()
}
