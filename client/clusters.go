package client

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/mbot-dev/mbot/identity"
)

// LeafCluster is a leaf cluster the job may reach directly (SPEC §8):
// outputs with cluster: <name> are exchanged at url, pinned to ca_pin,
// instead of through the root's relay.
//
//	leaf_clusters:
//	  - {name: leaf-eu, url: https://auth.eu.acme.internal:8443, ca_pin: sha256:...}
type LeafCluster struct {
	Name  string `yaml:"name"`
	URL   string `yaml:"url"`
	CAPin string `yaml:"ca_pin"`
}

// exchangeOutputName names the identity output added to a join that has
// leaf outputs but no identity output of the root to exchange: it is
// certified, used for the exchanges and written nowhere.
const exchangeOutputName = "cluster-exchange"

// clusterPlan splits a run's outputs into the root's, obtained by one join
// (or renewal), and each leaf's, obtained by one exchange per leaf of the
// root identity.
type clusterPlan struct {
	root   []int
	leaves []leafGroup
	// exchangeWith is the index in root of the identity output exchanged;
	// -1 when an output is added for it (exchangeOutputName).
	exchangeWith int
}

type leafGroup struct {
	cluster string
	outputs []int
}

func planClusters(outputs []Output) clusterPlan {
	p := clusterPlan{exchangeWith: -1}
	for i, out := range outputs {
		if out.Cluster == "" {
			if p.exchangeWith < 0 && out.Type == OutputTypeIdentity {
				p.exchangeWith = len(p.root)
			}
			p.root = append(p.root, i)
			continue
		}
		g := slices.IndexFunc(p.leaves, func(l leafGroup) bool { return l.cluster == out.Cluster })
		if g < 0 {
			p.leaves = append(p.leaves, leafGroup{cluster: out.Cluster})
			g = len(p.leaves) - 1
		}
		p.leaves[g].outputs = append(p.leaves[g].outputs, i)
	}
	return p
}

// rootJoin is what the root is asked for: the root's outputs, and the
// identity whose certificate is exchanged with the leaves.
type rootJoin struct {
	plan         clusterPlan
	requests     []identity.OutputRequest
	exchangeKeys *identity.Keys
}

// planRootJoin picks the root's requests out of every output's, adding an
// identity to exchange when leaves are asked for and the root has none. It
// comes before the proof: a bound_keypair proof signs these requests.
func planRootJoin(outputs []Output, keys []*identity.Keys, requests []identity.OutputRequest) (*rootJoin, error) {
	rj := &rootJoin{plan: planClusters(outputs)}
	rj.requests = pick(requests, rj.plan.root)
	switch {
	case len(rj.plan.leaves) == 0:
	case rj.plan.exchangeWith >= 0:
		rj.exchangeKeys = keys[rj.plan.root[rj.plan.exchangeWith]]
	default:
		k, err := identity.NewKeys()
		if err != nil {
			return nil, err
		}
		rj.exchangeKeys = k
		rj.requests = append(rj.requests, identity.OutputRequest{Name: exchangeOutputName, SSHPublicKey: k.SSHPublicKey(), TLSPublicKey: k.TLSPublicKeyPEM()})
	}
	return rj, nil
}

// obtain gets every output's certificates: the root's by ask (a join or a
// renewal of the request entries it is given), then each leaf's by one
// exchange of the root identity, and writes them all once every answer
// is in. The issued outputs are in the order of o.Outputs.
func obtain(ctx context.Context, o IssueOptions, root *API, dirs []string, keys []*identity.Keys, requests []identity.OutputRequest,
	rj *rootJoin, ask func([]identity.OutputRequest) (*identity.JoinResponse, error), written *[]string) ([]IssuedOutput, *identity.JoinResponse, error) {
	plan, rootReqs, exchangeKeys := rj.plan, rj.requests, rj.exchangeKeys
	resp, err := ask(rootReqs)
	if err != nil {
		return nil, nil, err
	}
	leafResps := make([]*identity.JoinResponse, len(plan.leaves))
	if len(plan.leaves) > 0 {
		at := plan.exchangeWith
		if at < 0 {
			at = len(rootReqs) - 1
		}
		if len(resp.Outputs) != len(rootReqs) {
			return nil, nil, fmt.Errorf("the authority answered with %d outputs for %d asked", len(resp.Outputs), len(rootReqs))
		}
		rootCert := resp.Outputs[at].TLSCertificate
		for g, leaf := range plan.leaves {
			if leafResps[g], err = exchangeLeaf(ctx, o, root, leaf, requests, rootCert, exchangeKeys); err != nil {
				return nil, nil, err
			}
		}
		if plan.exchangeWith < 0 {
			resp.Outputs = resp.Outputs[:len(resp.Outputs)-1]
		}
	}
	// Everything is rendered before anything is written, so that a bad
	// answer for any output leaves every destination untouched.
	issued := make([]IssuedOutput, len(o.Outputs))
	rendered := make([][]identity.File, len(o.Outputs))
	render := func(idx []int, r *identity.JoinResponse) error {
		done, files, err := renderOutputs(pick(o.Outputs, idx), pick(dirs, idx), pick(keys, idx), r)
		for i := range done {
			issued[idx[i]], rendered[idx[i]] = done[i], files[i]
		}
		return err
	}
	if len(plan.root) > 0 {
		if err := render(plan.root, resp); err != nil {
			return nil, nil, err
		}
	}
	for g, leaf := range plan.leaves {
		if err := render(leaf.outputs, leafResps[g]); err != nil {
			return nil, nil, err
		}
	}
	if err := writeOutputs(ctx, o.kube, o.Outputs, dirs, rendered, issued, written, o.wrote); err != nil {
		return nil, nil, err
	}
	return issued, resp, nil
}

// exchangeLeaf exchanges the root identity (rootCert, key) for the
// outputs of one leaf: straight at the leaf when mbot.yaml says where it
// is, otherwise through the root's relay.
func exchangeLeaf(ctx context.Context, o IssueOptions, root *API, leaf leafGroup, requests []identity.OutputRequest,
	rootCert string, key *identity.Keys) (*identity.JoinResponse, error) {
	payload := &identity.ExchangePayload{Cluster: leaf.cluster, Time: time.Now().UTC(), TTLSeconds: int64(o.TTL / time.Second),
		Outputs: pick(requests, leaf.outputs)}
	req, err := identity.NewExchange(payload, rootCert, key.TLS)
	if err != nil {
		return nil, err
	}
	api, path, via := root, identity.PathRelay(leaf.cluster), "through the root's relay"
	if url, pin := o.leafAddress(leaf); url != "" {
		if api, err = NewAPI(url, pin); err != nil {
			return nil, fmt.Errorf("leaf cluster %s: %w", leaf.cluster, err)
		}
		defer api.CloseIdleConnections()
		path, via = identity.PathExchange, "at "+url
	}
	var resp identity.JoinResponse
	if err := doRetryBusy(ctx, api, path, req, &resp); err != nil {
		var refusal *identity.Error
		if errors.As(err, &refusal) {
			return nil, fmt.Errorf("leaf cluster %s refused the exchange %s (%s): %s", leaf.cluster, via, refusal.Code, refusal.Message)
		}
		return nil, fmt.Errorf("leaf cluster %s, exchange %s: %w", leaf.cluster, via, err)
	}
	if resp.ClusterName != leaf.cluster {
		return nil, fmt.Errorf("the exchange for leaf cluster %s was answered by cluster %s; check cluster: and leaf_clusters in mbot.yaml",
			leaf.cluster, identity.Quote(identity.Truncate(resp.ClusterName, 64)))
	}
	if err := checkLeafChain(&resp); err != nil {
		return nil, fmt.Errorf("leaf cluster %s: %w", leaf.cluster, err)
	}
	return &resp, nil
}

// checkLeafChain checks that the leaf's answer carries its TLS CA.
func checkLeafChain(resp *identity.JoinResponse) error {
	block, _ := pem.Decode([]byte(resp.TLSCA))
	if block == nil {
		return errors.New("the answer carries no TLS CA")
	}
	_, err := x509.ParseCertificate(block.Bytes)
	return err
}

// leafAddress is where leaf is reached directly, if anywhere: an output's
// authority:, or its leaf_clusters entry.
func (o *IssueOptions) leafAddress(leaf leafGroup) (url, pin string) {
	for _, lc := range o.LeafClusters {
		if lc.Name == leaf.cluster {
			url, pin = lc.URL, lc.CAPin
		}
	}
	for _, i := range leaf.outputs {
		if a := o.Outputs[i].Authority; a != "" {
			url = a
		}
	}
	return url, pin
}

func pick[T any](all []T, idx []int) []T {
	out := make([]T, len(idx))
	for i, j := range idx {
		out[i] = all[j]
	}
	return out
}

// doRetryBusy posts an exchange, sending it again (at most
// maxJoinAttempts times) while the root answers leaf_busy: the relay was
// full and the leaf never saw it.
func doRetryBusy(ctx context.Context, api *API, path string, req, resp any) error {
	for attempt := 1; ; attempt++ {
		err := api.Do(ctx, http.MethodPost, path, req, resp)
		var refusal *identity.Error
		if err == nil || !errors.As(err, &refusal) || refusal.Code != identity.CodeLeafBusy || attempt >= maxJoinAttempts ||
			refusal.RetryAfter <= 0 || refusal.RetryAfter > maxRetryAfter {
			return err
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < refusal.RetryAfter+retryMargin {
			return err
		}
		t := time.NewTimer(refusal.RetryAfter)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
