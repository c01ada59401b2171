//go:build !chaos || !unix

package crash

// Enabled reports whether this build has crash points.
const Enabled = false

// Point does nothing: crash points exist only in builds with -tags chaos (on Unix).
func Point(service, point string) {}
