// Package e2e holds the integration tests: overlayd built from this tree and
// run as real processes on emulated hosts (network namespaces), with the
// embedded etcd and with Debian's etcd server. They need root and skip with
// the reason otherwise.
package e2e
