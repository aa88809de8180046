package authority

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mbot-dev/mbot/authority/resources"
	"github.com/mbot-dev/mbot/identity"
)

// kubernetesOutput is the kubernetes output type: a client certificate for
// a Kubernetes user (CN = the user, O = its groups, as the API server's
// x509 authenticator reads them), signed by the kubernetes-client CA (the
// API server's --client-ca-file), with the API server's URL and the CA its
// certificate is checked by. Granted by role fields kubernetes_users and
// kubernetes_groups.
type kubernetesOutput struct{}

func init() { outputKinds[identity.OutputKubernetes] = kubernetesOutput{} }

func (kubernetesOutput) keys() (sshKey, tlsKey bool) { return false, true }

func (kubernetesOutput) signers() (sshCA, tlsCA string) { return "", "kubernetes-client-ca" }

func (kubernetesOutput) checkRequest(out *identity.OutputRequest) error {
	r := out.Kubernetes
	if r == nil {
		return identity.Errorf(identity.CodeBadRequest, "output %q of type kubernetes names no cluster; set kubernetes_cluster:", out.Name)
	}
	if err := identity.CheckName("kubernetes_cluster", r.Cluster); err != nil {
		return identity.Errorf(identity.CodeBadRequest, "output %q: %v", out.Name, err)
	}
	return checkKubernetesSubject(out.Name, r.User, r.Groups)
}

// checkKubernetesSubject checks a Kubernetes user (may be empty: not asked)
// and groups; called on the request and again before signing.
func checkKubernetesSubject(output, user string, groups []string) error {
	if user != "" {
		if err := identity.CheckKubernetesName("user", user); err != nil {
			return identity.Errorf(identity.CodeBadRequest, "output %q: %v", output, err)
		}
	}
	if len(groups) > identity.MaxKubernetesGroups {
		return identity.Errorf(identity.CodeBadRequest, "output %q asks for %d Kubernetes groups; at most %d", output, len(groups), identity.MaxKubernetesGroups)
	}
	for i, g := range groups {
		if err := identity.CheckKubernetesName("group", g); err != nil {
			return identity.Errorf(identity.CodeBadRequest, "output %q: %v", output, err)
		}
		if slices.Contains(groups[:i], g) {
			return identity.Errorf(identity.CodeBadRequest, "output %q asks for Kubernetes group %q twice", output, g)
		}
	}
	return nil
}

func (kubernetesOutput) audit(resp *identity.OutputResponse) string {
	g := resp.Kubernetes
	return fmt.Sprintf("%s type=kubernetes kubernetes_cluster=%s user=%s", resp.Name, g.Cluster, g.User) + auditList("groups", g.Groups)
}

func (kubernetesOutput) sign(sc *signCtx) (*identity.OutputResponse, error) {
	r := sc.out.Kubernetes
	cluster, ok := sc.set.KubernetesClusters[r.Cluster]
	if !ok {
		existing := "there are none; create one with mbot apply (kind: kubernetes_cluster)"
		if names := slices.Sorted(maps.Keys(sc.set.KubernetesClusters)); len(names) > 0 {
			existing = "existing: " + strings.Join(names, ", ")
		}
		return nil, identity.Errorf(identity.CodeBadRequest, "output %q: there is no kubernetes_cluster named %q on this authority (%s)", sc.out.Name, r.Cluster, existing)
	}
	user, err := kubernetesUser(sc)
	if err != nil {
		return nil, err
	}
	groups := r.Groups
	if len(groups) == 0 {
		// As tbot does: every group the output's roles grant.
		groups = slices.Clone(sc.grant.Granted(resources.FieldKubernetesGroups))
	}
	for _, g := range groups {
		if !slices.Contains(sc.grant.Granted(resources.FieldKubernetesGroups), g) {
			return nil, notGranted(sc, resources.FieldKubernetesGroups, "Kubernetes group", g)
		}
	}
	// Checked before signing, whatever path the values came by.
	if err := checkKubernetesSubject(sc.out.Name, user, groups); err != nil {
		return nil, err
	}
	// The API server's x509 authenticator takes the user from the CN and
	// a group from each O. No SAN, no SPIFFE ID: nothing makes it pass as
	// a bot or a database user, and no other CA's certificate passes here.
	cert, err := sc.cas.KubernetesClient.Sign(&x509.Certificate{
		Subject:         pkix.Name{CommonName: user, Organization: groups},
		NotAfter:        sc.notAfter,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions: sc.provenance(),
	}, sc.keys.tls)
	if err != nil {
		return nil, err
	}
	resp := sc.x509Response(identity.OutputKubernetes, cert)
	resp.Kubernetes = &identity.KubernetesGrant{
		Cluster:   r.Cluster,
		APIServer: cluster.Spec.APIServer,
		CA:        cluster.Spec.CA + "\n",
		User:      user,
		Groups:    append([]string{}, groups...),
	}
	return resp, nil
}

// kubernetesUser is the user a kubernetes output acts as: the one asked,
// when the output's roles grant it, or the only one they grant.
func kubernetesUser(sc *signCtx) (string, error) {
	asked := sc.out.Kubernetes.User
	users := sc.grant.Granted(resources.FieldKubernetesUsers)
	switch {
	case asked != "":
		if !slices.Contains(users, asked) {
			return "", notGranted(sc, resources.FieldKubernetesUsers, "Kubernetes user", asked)
		}
		return asked, nil
	case len(users) == 1:
		return users[0], nil
	case len(users) > 1:
		return "", identity.Errorf(identity.CodeBadRequest, "output %q: the roles grant bot %q several Kubernetes users (%s); set user: to the one this output acts as",
			sc.out.Name, sc.botName(), strings.Join(users, ", "))
	}
	// None: say which of the bot's roles would grant one.
	var left []string
	for _, rn := range sc.bot.Spec.Roles {
		if role, ok := sc.set.Roles[rn]; ok && !slices.Contains(sc.grant.Roles, rn) && len(role.Spec.KubernetesUsers) > 0 {
			left = append(left, rn)
		}
	}
	if len(left) > 0 {
		return "", identity.Errorf(identity.CodeRoleDenied, "output %q: Kubernetes users are granted by role %s of bot %q, which this output does not use; add the role to the output's roles: (or list none to use all)",
			sc.out.Name, strings.Join(left, ", "), sc.botName())
	}
	return "", identity.Errorf(identity.CodeRoleDenied, "output %q: no role of bot %q grants a Kubernetes user; add one to the kubernetes_users of one of its roles (%s)",
		sc.out.Name, sc.botName(), strings.Join(sc.bot.Spec.Roles, ", "))
}
