package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The fields of flannel's network config (v0.28), and those of them that
// overlayd parses but does not implement, with why.
var (
	configFields = []string{"Network", "SubnetLen", "SubnetMin", "SubnetMax",
		"EnableIPv4", "EnableIPv6", "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax",
		"EnableNFTables", "Backend"}
	backendFields = []string{"Type", "Port", "VNI", "MTU", "GBP", "Learning", "DirectRouting", "MacPrefix"}

	ipv6Only          = "overlayd leases and routes IPv4 only"
	unsupportedFields = map[string]string{
		"EnableIPv6":            ipv6Only,
		"IPv6Network":           ipv6Only,
		"IPv6SubnetLen":         ipv6Only,
		"IPv6SubnetMin":         ipv6Only,
		"IPv6SubnetMax":         ipv6Only,
		"EnableNFTables":        "overlayd installs no masquerading rules of its own here",
		"Backend.GBP":           "overlayd's vxlan sends no group policy extension",
		"Backend.Learning":      "overlayd programs its fdb entries itself, as flanneld does by default",
		"Backend.DirectRouting": "use the host-gw backend where the hosts share a link",
		"Backend.MacPrefix":     "overlayd derives the VtepMAC from the public IP and VNI",
	}
)

// checkFields reports what ParseConfig would silently ignore in a config:
// fields it does not know (a typo: with the nearest known name) and
// flannel's fields that overlayd does not implement. A field that says
// "off" (false, 0, "", null) is no problem. The result is nil or
// errors.Join of *ConfigError, in field order.
func checkFields(data []byte) error {
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return nil // ParseConfig reports broken JSON
	}
	errs := checkObject("", top, configFields)
	if raw, ok := lookupFold(top, "Backend"); ok {
		var be map[string]json.RawMessage
		if json.Unmarshal(raw, &be) == nil {
			errs = append(errs, checkObject("Backend.", be, backendFields)...)
		}
	}
	return errors.Join(errs...)
}

func checkObject(parent string, obj map[string]json.RawMessage, known []string) []error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		i := slices.IndexFunc(known, func(k string) bool { return strings.EqualFold(k, name) })
		if i < 0 {
			msg := "unknown field; remove it"
			if near := NearestName(name, known); near != "" {
				msg = fmt.Sprintf("unknown field; did you mean %s%s?", parent, near)
			}
			errs = append(errs, &ConfigError{Field: parent + name, Msg: msg})
			continue
		}
		field := parent + known[i]
		if why, ok := unsupportedFields[field]; ok && !isOff(obj[name]) {
			errs = append(errs, &ConfigError{Field: field, Msg: "not supported by overlayd (" + why + "); remove it"})
		}
	}
	return errs
}

func lookupFold(obj map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	for k, v := range obj {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// isOff reports whether a JSON value leaves a feature off.
func isOff(v json.RawMessage) bool {
	switch strings.TrimSpace(string(v)) {
	case "false", "0", `""`, "null":
		return true
	}
	return false
}

// NearestName is the known name closest to name by edit distance (case
// ignored), if close enough to be a typo of it; "" if none is. It names
// the field a config meant, and the flag a command line meant.
func NearestName(name string, known []string) string {
	best, bestD := "", len(name)/3+2
	for _, k := range known {
		if d := editDistance(strings.ToLower(name), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, with an
// adjacent swap counting as one edit.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
