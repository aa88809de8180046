package verify

import "testing"

// TestAWSSTSHosts checks the built-in allowlist of STS endpoints, the
// hosts an iam proof may make the authority send a request to.
func TestAWSSTSHosts(t *testing.T) {
	allowed := []string{
		"sts.amazonaws.com",
		"sts.us-east-1.amazonaws.com",
		"sts.eu-central-2.amazonaws.com",
		"sts.ap-southeast-5.amazonaws.com",
		"sts.us-gov-west-1.amazonaws.com",
		"sts-fips.us-east-2.amazonaws.com",
		"sts-fips.us-gov-east-1.amazonaws.com",
		"sts.cn-north-1.amazonaws.com.cn",
		"sts.cn-northwest-1.amazonaws.com.cn",
	}
	refused := []string{
		"",
		"amazonaws.com",
		"sts.amazonaws.com.evil.example",
		"sts.us-east-1.amazonaws.com.evil.example",
		"evil.example/sts.us-east-1.amazonaws.com",
		"sts.us-east-1.amazonaws.com.",
		"sts.evil.amazonaws.com",
		"sts.us-east-1.evil.amazonaws.com",
		"s3.us-east-1.amazonaws.com",
		"ec2.us-east-1.amazonaws.com",
		"sts.us-east-1.amazonaws.com:8443",
		"sts.us-east-1.amazonaws.com.cn",
		"sts-fips.cn-north-1.amazonaws.com.cn",
		"sts.cn-north-1.amazonaws.com.cn.evil.example",
		"sts.127.0.0.1.nip.io",
		"169.254.169.254",
		"localhost",
		"sts..amazonaws.com",
		"sts.US-EAST-1.amazonaws.com", // callers lower-case first
	}
	for _, h := range allowed {
		if !isAWSSTSHost(h) {
			t.Errorf("isAWSSTSHost(%q) = false, want true", h)
		}
	}
	for _, h := range refused {
		if isAWSSTSHost(h) {
			t.Errorf("isAWSSTSHost(%q) = true, want false", h)
		}
	}
}
