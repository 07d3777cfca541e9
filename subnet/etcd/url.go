package etcd

import (
	"fmt"
	"net/url"
)

// CheckURL reports whether s is an etcd URL overlayd can use: http or
// https, a host and a port. The etcd client takes a malformed endpoint
// without a word and fails only when it dials, as a timeout that blames
// the network.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q: %v; want scheme://host:port, like http://127.0.0.1:2379", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: the scheme must be http or https, like http://127.0.0.1:2379", s)
	case u.Hostname() == "" || u.Port() == "":
		return fmt.Errorf("%q: want scheme://host:port, like http://127.0.0.1:2379", s)
	}
	return nil
}
