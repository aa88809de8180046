package identity

// The proof of an iam join is a signed sts:GetCallerIdentity request, which
// the authority forwards to AWS STS: only AWS can check the signature, and the
// answer names the caller. The credentials that signed it never leave the job.

// AWSSignedRequest is the proof of an iam join, sent as JSON.
type AWSSignedRequest struct {
	Method string `json:"method"`
	URL    string `json:"url"`
	// Headers are the request's headers, Authorization included; Host is
	// the URL's host.
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

// Headers that bind a signed GetCallerIdentity request to one authority and
// one join; both must be among the SigV4 signed headers.
const (
	AWSAudienceHeader = "X-Mbot-Audience"
	AWSNonceHeader    = "X-Mbot-Nonce"
)

// AWSGetCallerIdentityBody is the only request body an iam proof may carry.
const AWSGetCallerIdentityBody = "Action=GetCallerIdentity&Version=2011-06-15"
