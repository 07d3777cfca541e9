// Package dockeropts turns a subnet file into dockerd's network options:
// the environment file flannel's mk-docker-opts.sh writes, or the same
// options merged into Docker's daemon.json. Everything here is a pure
// function of its input except WriteFile and MergeDaemonJSONFile.
package dockeropts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/overlayd/overlayd/subnet"
)

// Options are the dockerd options a subnet file implies.
type Options struct {
	BIP string // --bip: the bridge's address and length, e.g. 100.96.1.1/24
	MTU int    // --mtu
	// IPMasq is dockerd's --ip-masq: the opposite of FLANNEL_IPMASQ, since
	// whoever masquerades, the other must not. OmitIPMasq leaves it out
	// (mk-docker-opts.sh -m), so Docker's default or the user's applies.
	IPMasq     bool
	OmitIPMasq bool
}

// FromSubnetEnv maps a subnet file to dockerd options as mk-docker-opts.sh
// does; omitIPMasq is its -m.
func FromSubnetEnv(env subnet.SubnetEnv, omitIPMasq bool) Options {
	return Options{BIP: env.Subnet.String(), MTU: env.MTU, IPMasq: !env.IPMasq, OmitIPMasq: omitIPMasq}
}

// option is one dockerd option: its mk-docker-opts.sh variable, its
// command-line flag and its daemon.json key and value.
type option struct {
	envVar, flag, jsonKey string
	value                 any
}

// list returns the options in mk-docker-opts.sh's order, which is its
// variables' names sorted (bash's compgen): BIP, IPMASQ, MTU.
func (o Options) list() []option {
	out := []option{{"DOCKER_OPT_BIP", "--bip", "bip", o.BIP}}
	if !o.OmitIPMasq {
		out = append(out, option{"DOCKER_OPT_IPMASQ", "--ip-masq", "ip-masq", o.IPMasq})
	}
	return append(out, option{"DOCKER_OPT_MTU", "--mtu", "mtu", o.MTU})
}

// Flags returns the options as dockerd flags.
func (o Options) Flags() []string {
	var out []string
	for _, opt := range o.list() {
		out = append(out, fmt.Sprintf("%s=%v", opt.flag, opt.value))
	}
	return out
}

// Env renders the environment file mk-docker-opts.sh writes, byte for
// byte: with individual, one DOCKER_OPT_* variable per option; with
// combined, all of them in the variable key, with its leading space:
//
//	DOCKER_OPT_BIP="--bip=100.96.1.1/24"
//	DOCKER_OPT_IPMASQ="--ip-masq=false"
//	DOCKER_OPT_MTU="--mtu=1450"
//	DOCKER_OPTS=" --bip=100.96.1.1/24 --ip-masq=false --mtu=1450"
//
// A nil o writes the variables empty: the options went elsewhere (into
// daemon.json), and a unit expanding them must pass none.
func Env(o *Options, individual, combined bool, key string) []byte {
	var b bytes.Buffer
	var flags []string
	if o != nil {
		flags = o.Flags()
		if individual {
			for i, opt := range o.list() {
				fmt.Fprintf(&b, "%s=\"%s\"\n", opt.envVar, flags[i])
			}
		}
	}
	if combined {
		all := ""
		if len(flags) > 0 {
			all = " " + strings.Join(flags, " ")
		}
		fmt.Fprintf(&b, "%s=\"%s\"\n", key, all)
	}
	return b.Bytes()
}

// ValidKey reports whether key can name an environment variable.
func ValidKey(key string) bool {
	if key == "" || key[0] >= '0' && key[0] <= '9' {
		return false
	}
	for _, c := range key {
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// MergeDaemonJSON sets bip, mtu and (unless omitted) ip-masq in the
// daemon.json data, keeping every other key, the keys' order and their
// values; whitespace is normalised to two-space indentation. Empty data
// is an empty object. Data that is not one JSON object is an error.
func MergeDaemonJSON(data []byte, o Options) ([]byte, error) {
	members, err := parseDaemonJSON(data) // a BOM is dropped
	if err != nil {
		return nil, err
	}
	for _, opt := range o.list() {
		val, err := json.Marshal(opt.value)
		if err != nil {
			return nil, err
		}
		found := false
		for i := range members {
			if members[i].key == opt.jsonKey {
				members[i].val, found = val, true
			}
		}
		if !found {
			members = append(members, member{opt.jsonKey, val})
		}
	}
	var b bytes.Buffer
	b.WriteString("{")
	for i, m := range members {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  ")
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.Encode(m.key)       // a string always encodes
		b.Truncate(b.Len() - 1) // Encode's newline
		b.WriteString(": ")
		if err := json.Indent(&b, m.val, "  ", "  "); err != nil {
			return nil, err
		}
	}
	if len(members) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// Conflicts returns the daemon.json keys of o that dockerd's command line
// args also sets: dockerd refuses to start when a directive is both a flag
// and in its configuration file.
func Conflicts(o Options, args []string) []string {
	var out []string
	for _, opt := range o.list() {
		for _, a := range args {
			if a == opt.flag || strings.HasPrefix(a, opt.flag+"=") {
				out = append(out, opt.jsonKey)
				break
			}
		}
	}
	return out
}

// utf8BOM may start a daemon.json saved by a Windows editor; dockerd
// skips it.
var utf8BOM = []byte("\xef\xbb\xbf")

// InDaemonJSON returns the daemon.json keys of o that the daemon.json data
// sets already: given as flags too, dockerd would refuse to start. Empty
// data sets none; a leading UTF-8 byte order mark is skipped, as dockerd
// does.
func InDaemonJSON(data []byte, o Options) ([]string, error) {
	members, err := parseDaemonJSON(data)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, opt := range o.list() {
		if slices.ContainsFunc(members, func(m member) bool { return m.key == opt.jsonKey }) {
			out = append(out, opt.jsonKey)
		}
	}
	return out, nil
}

// member is one top-level key of a daemon.json, with its value as written.
type member struct {
	key string
	val json.RawMessage
}

// parseDaemonJSON returns the members of the JSON object in data, in
// their order. Empty data is an empty object; a leading UTF-8 byte order
// mark is skipped, as dockerd does.
func parseDaemonJSON(data []byte) ([]member, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if tok != json.Delim('{') {
		return nil, errors.New("not JSON: not an object")
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not JSON: %w", err)
		}
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("not JSON: value of %q: %w", tok, err)
		}
		members = append(members, member{tok.(string), val})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not JSON: data after the object")
	}
	return members, nil
}

// ExecStart returns the words of the command a service runs, from its unit
// file and drop-ins in the order systemd reads them: the last ExecStart=
// of the [Service] sections wins, and an empty ExecStart= clears the ones
// before it. Continuation lines and quotes are followed; the command's
// prefixes (-, @, +, !, :) are removed.
func ExecStart(units ...[]byte) []string {
	var cmd []string
	for _, unit := range units {
		section := ""
		lines := strings.Split(string(unit), "\n")
		for i := 0; i < len(lines); i++ {
			line := strings.TrimSpace(lines[i])
			for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
				i++
				line = strings.TrimSuffix(line, "\\") + " " + strings.TrimSpace(lines[i])
			}
			switch {
			case line == "" || line[0] == '#' || line[0] == ';':
			case line[0] == '[':
				section = strings.Trim(line, "[]")
			case section == "Service":
				key, val, ok := strings.Cut(line, "=")
				if ok && strings.TrimSpace(key) == "ExecStart" {
					cmd = splitWords(strings.TrimSpace(val))
					if len(cmd) > 0 {
						cmd[0] = strings.TrimLeft(cmd[0], "-@+!:")
					}
				}
			}
		}
	}
	return cmd
}

// splitWords splits a command line as systemd does: at spaces outside
// double or single quotes.
func splitWords(s string) []string {
	var (
		out   []string
		word  strings.Builder
		quote rune
		in    bool
	)
	for _, c := range s {
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			word.WriteRune(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, word.String())
				word.Reset()
				in = false
			}
		default:
			word.WriteRune(c)
			in = true
		}
	}
	if in {
		out = append(out, word.String())
	}
	return out
}

// MergeDaemonJSONFile merges o into the daemon.json at path (see
// MergeDaemonJSON), creating it if it does not exist; it refuses when the
// dockerd command of the unit files given (a docker.service and its
// drop-ins) sets one of the same options as a flag. The file is replaced
// atomically and keeps its mode and owner; a file that is not JSON is left
// untouched. changed is false when the file already held the options.
func MergeDaemonJSONFile(path string, o Options, unitFiles []string) (changed bool, err error) {
	var units [][]byte
	for _, u := range unitFiles {
		data, err := os.ReadFile(u)
		if err != nil {
			return false, fmt.Errorf("dockerd unit: %w", err)
		}
		units = append(units, data)
	}
	if keys := Conflicts(o, ExecStart(units...)); len(keys) > 0 {
		return false, fmt.Errorf("%s: not merging %s: dockerd's ExecStart in %s sets them as flags too, and dockerd refuses a directive given both ways; remove the flags or drop --daemon-json",
			path, strings.Join(keys, ", "), strings.Join(unitFiles, ", "))
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("daemon.json: %w", err)
	}
	merged, err := MergeDaemonJSON(old, o)
	if err != nil {
		return false, fmt.Errorf("%s: %w; left untouched", path, err)
	}
	if old != nil && bytes.Equal(old, merged) {
		return false, nil
	}
	if err := WriteFile(path, merged, 0o644); err != nil {
		return false, fmt.Errorf("daemon.json: %w", err)
	}
	return true, nil
}

// WriteFile replaces the file at path with data atomically
// (subnet.WriteFileAtomic). An existing file keeps its mode and owner; a
// new one gets perm, and missing directories are made.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	uid, gid := -1, -1
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	return subnet.WriteFileAtomic(path, data, perm, uid, gid)
}

// Keys lists the daemon.json keys o sets, for messages.
func (o Options) Keys() []string {
	var out []string
	for _, opt := range o.list() {
		out = append(out, opt.jsonKey)
	}
	return out
}
