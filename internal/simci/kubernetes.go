package simci

// KubernetesClaims are the claims (but iss, aud, iat, exp) of a projected
// service account token of service account deployer in namespace ci, bound
// to pod mbot-job-7x2kq, shaped like the bound token Kubernetes documents
// in "Managing Service Accounts".
func KubernetesClaims() map[string]any {
	return map[string]any{
		"sub": "system:serviceaccount:ci:deployer",
		"kubernetes.io": map[string]any{
			"namespace": "ci",
			"node": map[string]any{
				"name": "ci-pool-7f9c4d6b5-x2kq8",
				"uid":  "58456cb0-dd00-45ed-b797-5578fdceaced",
			},
			"pod": map[string]any{
				"name": "mbot-job-7x2kq",
				"uid":  "778a530c-b3f4-47c0-9cd5-ab018fb64f33",
			},
			"serviceaccount": map[string]any{
				"name": "deployer",
				"uid":  "a087d5a0-e1dd-43ec-93ac-f13d89cd13af",
			},
		},
	}
}
