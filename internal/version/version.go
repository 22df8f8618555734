// Package version holds the release of postgate, set at link time with
// -ldflags "-X postgate/internal/version.Version=...".
package version

// Version is shown by `postgate version` and in the X-Greylist header.
var Version = "0.1.0-dev"
