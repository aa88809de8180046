package store

import (
	"context"
	"time"
)

// LeafTunnel is a leaf cluster's tunnel as the root serving it last
// recorded it, for mbot get leaf_clusters in any process.
type LeafTunnel struct {
	Connected bool      `json:"connected"`
	LastSeen  time.Time `json:"last_seen"`
}

// RecordLeafTunnel records whether leaf's tunnel is attached and when it
// was last seen.
func (s *sqlStore) RecordLeafTunnel(ctx context.Context, leaf string, t LeafTunnel) error {
	_, err := s.write.ExecContext(ctx, `INSERT INTO leaf_tunnels (leaf, connected, last_seen) VALUES ($1, $2, $3)
		ON CONFLICT (leaf) DO UPDATE SET connected = excluded.connected, last_seen = excluded.last_seen`,
		leaf, t.Connected, t.LastSeen.UnixNano())
	return s.wrap("recording the tunnel of leaf "+leaf, err)
}

// LeafTunnels returns the recorded tunnel of every leaf seen.
func (s *sqlStore) LeafTunnels(ctx context.Context) (map[string]LeafTunnel, error) {
	out, err := s.leafTunnels(ctx)
	return out, s.wrap("reading leaf tunnels", err)
}

func (s *sqlStore) leafTunnels(ctx context.Context) (map[string]LeafTunnel, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT leaf, connected, last_seen FROM leaf_tunnels`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]LeafTunnel{}
	for rows.Next() {
		var (
			leaf      string
			connected bool
			seen      int64
		)
		if err := rows.Scan(&leaf, &connected, &seen); err != nil {
			return nil, err
		}
		out[leaf] = LeafTunnel{Connected: connected, LastSeen: time.Unix(0, seen).UTC()}
	}
	return out, rows.Err()
}
