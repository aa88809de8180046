package joiners

import "time"

// The tests see no machine's DMI tables or pod token files: each test that
// wants them points these at files of its own.
func init() {
	gcpProductNamePath = "/nonexistent/dmi/product_name"
	azureAssetTagPath = "/nonexistent/dmi/chassis_asset_tag"
	kubernetesTokenPaths = []string{"/nonexistent/tokens/mbot", "/nonexistent/serviceaccount/token"}
}

// SetGCPProductNamePath stands path in for /sys/class/dmi/id/product_name.
func SetGCPProductNamePath(path string) (restore func()) {
	prev := gcpProductNamePath
	gcpProductNamePath = path
	return func() { gcpProductNamePath = prev }
}

// SetAzureAssetTagPath stands path in for /sys/class/dmi/id/chassis_asset_tag.
func SetAzureAssetTagPath(path string) (restore func()) {
	prev := azureAssetTagPath
	azureAssetTagPath = path
	return func() { azureAssetTagPath = prev }
}

// SetKubernetesTokenPaths stands paths in for the pod's default token paths.
func SetKubernetesTokenPaths(paths ...string) (restore func()) {
	prev := kubernetesTokenPaths
	kubernetesTokenPaths = paths
	return func() { kubernetesTokenPaths = prev }
}

// SetCloudTimeouts shortens the waits for the GCP metadata server and the
// Azure managed identity endpoint.
func SetCloudTimeouts(d time.Duration) (restore func()) {
	prevGCP, prevAzure := gcpMetadataTimeout, azureTokenTimeout
	gcpMetadataTimeout, azureTokenTimeout = d, d
	return func() { gcpMetadataTimeout, azureTokenTimeout = prevGCP, prevAzure }
}
