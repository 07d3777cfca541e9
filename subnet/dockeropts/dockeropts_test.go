package dockeropts

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/overlayd/overlayd/subnet"
)

func env(ipMasq bool) subnet.SubnetEnv {
	return subnet.SubnetEnv{
		Network: netip.MustParsePrefix("100.96.0.0/16"),
		Subnet:  netip.MustParsePrefix("100.96.1.1/24"),
		MTU:     1450,
		IPMasq:  ipMasq,
	}
}

// The outputs mk-docker-opts.sh gave for the same subnet file (USERS.md B.2).
func TestEnvMatchesMkDockerOpts(t *testing.T) {
	cases := []struct {
		name                 string
		ipMasq, omit         bool
		individual, combined bool
		key, want            string
	}{
		{"default", true, false, true, true, "DOCKER_OPTS",
			"DOCKER_OPT_BIP=\"--bip=100.96.1.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\n" +
				"DOCKER_OPTS=\" --bip=100.96.1.1/24 --ip-masq=false --mtu=1450\"\n"},
		{"-c -k", true, false, false, true, "DOCKER_NETWORK_OPTIONS",
			"DOCKER_NETWORK_OPTIONS=\" --bip=100.96.1.1/24 --ip-masq=false --mtu=1450\"\n"},
		{"-i, FLANNEL_IPMASQ=false", false, false, true, false, "DOCKER_OPTS",
			"DOCKER_OPT_BIP=\"--bip=100.96.1.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=true\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\n"},
		{"-i -m", true, true, true, false, "DOCKER_OPTS",
			"DOCKER_OPT_BIP=\"--bip=100.96.1.1/24\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\n"},
	}
	for _, tc := range cases {
		o := FromSubnetEnv(env(tc.ipMasq), tc.omit)
		if got := string(Env(&o, tc.individual, tc.combined, tc.key)); got != tc.want {
			t.Errorf("%s:\n%s\nwant\n%s", tc.name, got, tc.want)
		}
	}
	if got := string(Env(nil, true, true, "DOCKER_NETWORK_OPTIONS")); got != "DOCKER_NETWORK_OPTIONS=\"\"\n" {
		t.Errorf("no options: %q", got)
	}
}

func TestValidKey(t *testing.T) {
	for key, want := range map[string]bool{"DOCKER_OPTS": true, "_x1": true, "": false, "1A": false, "A-B": false, "A B": false} {
		if ValidKey(key) != want {
			t.Errorf("ValidKey(%q) = %v", key, !want)
		}
	}
}

func TestMergeDaemonJSONKeepsOtherKeysInOrder(t *testing.T) {
	in := `{"log-driver": "journald", "mtu": 1500,
	 "log-opts": {"tag": "<x>", "n": [1, 2]}, "storage-driver": "overlay2"}`
	got, err := MergeDaemonJSON([]byte(in), FromSubnetEnv(env(true), false))
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "log-driver": "journald",
  "mtu": 1450,
  "log-opts": {
    "tag": "<x>",
    "n": [
      1,
      2
    ]
  },
  "storage-driver": "overlay2",
  "bip": "100.96.1.1/24",
  "ip-masq": false
}
`
	if string(got) != want {
		t.Errorf("merged:\n%s\nwant\n%s", got, want)
	}
	again, err := MergeDaemonJSON(got, FromSubnetEnv(env(true), false))
	if err != nil || string(again) != string(got) {
		t.Errorf("merging twice changed the file: %v\n%s", err, again)
	}
}

func TestMergeDaemonJSONEmptyAndOmitted(t *testing.T) {
	for _, in := range []string{"", " \n", "{}", "\xef\xbb\xbf{}"} { // a BOM, as dockerd, skipped
		got, err := MergeDaemonJSON([]byte(in), FromSubnetEnv(env(false), true))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if want := "{\n  \"bip\": \"100.96.1.1/24\",\n  \"mtu\": 1450\n}\n"; string(got) != want {
			t.Errorf("%q merged:\n%s\nwant\n%s", in, got, want)
		}
	}
}

func TestMergeDaemonJSONRejectsWhatIsNotAnObject(t *testing.T) {
	for _, in := range []string{"[]", `{"bip": }`, `{"a": 1} {"b": 2}`, "bip: x", `"x"`, `{"a": 1`} {
		if _, err := MergeDaemonJSON([]byte(in), FromSubnetEnv(env(true), false)); err == nil {
			t.Errorf("%q: accepted", in)
		}
	}
}

const dockerUnit = `[Unit]
Description=Docker Application Container Engine

[Service]
Type=notify
EnvironmentFile=-/etc/default/docker
ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS
ExecReload=/bin/kill -s HUP $MAINPID
`

func TestExecStartFollowsDropIns(t *testing.T) {
	if got := ExecStart([]byte(dockerUnit)); !slices.Equal(got, []string{"/usr/sbin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock", "$DOCKER_OPTS"}) {
		t.Errorf("unit alone: %q", got)
	}
	dropIn := "[Service]\nExecStart=\nExecStart=-/usr/bin/dockerd -H fd:// \\\n  --bip=\"100.96.9.1/24\" \\\n  --ip-masq=false\n[Install]\nExecStart=/not/this\n"
	if got := ExecStart([]byte(dockerUnit), []byte(dropIn)); !slices.Equal(got, []string{"/usr/bin/dockerd", "-H", "fd://", "--bip=100.96.9.1/24", "--ip-masq=false"}) {
		t.Errorf("with drop-in: %q", got)
	}
	if got := ExecStart([]byte(dockerUnit), []byte("[Service]\nExecStart=\n")); got != nil {
		t.Errorf("cleared: %q", got)
	}
}

func TestConflicts(t *testing.T) {
	o := FromSubnetEnv(env(true), false)
	args := []string{"/usr/bin/dockerd", "--bip", "10.0.0.1/24", "--mtu=1400", "--ip-masqx", "--iptables=false"}
	if got := Conflicts(o, args); !slices.Equal(got, []string{"bip", "mtu"}) {
		t.Errorf("conflicts %q, want bip, mtu", got)
	}
	o.OmitIPMasq = true
	if got := Conflicts(o, []string{"dockerd", "--ip-masq=false"}); got != nil {
		t.Errorf("omitted ip-masq conflicts: %q", got)
	}
}

func TestMergeDaemonJSONFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "daemon.json")
	o := FromSubnetEnv(env(true), false)

	// A new file is created, with the parent directory.
	newPath := filepath.Join(dir, "etc", "docker", "daemon.json")
	if changed, err := MergeDaemonJSONFile(newPath, o, nil); err != nil || !changed {
		t.Fatalf("new file: changed=%v, %v", changed, err)
	}

	// An existing file keeps its mode, and is not rewritten when unchanged.
	if err := os.WriteFile(path, []byte(`{"debug": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := MergeDaemonJSONFile(path, o, nil); err != nil || !changed {
		t.Fatalf("merge: changed=%v, %v", changed, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 kept", fi.Mode().Perm())
	}
	if changed, err := MergeDaemonJSONFile(path, o, nil); err != nil || changed {
		t.Errorf("second merge: changed=%v, %v", changed, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 { // daemon.json and etc/
		t.Errorf("%d entries in the directory: a temporary file left?", len(entries))
	}

	// A drop-in that gives --mtu as a flag: refused, file untouched.
	dropIn := filepath.Join(dir, "override.conf")
	os.WriteFile(dropIn, []byte("[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --mtu=1400\n"), 0o644)
	before, _ := os.ReadFile(path)
	_, err := MergeDaemonJSONFile(path, o, []string{dropIn})
	if err == nil || !strings.Contains(err.Error(), "mtu") || !strings.Contains(err.Error(), dropIn) {
		t.Errorf("conflicting drop-in: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Error("refused merge changed the file")
	}

	// Not JSON: an error naming the file, which stays as it was.
	bad := "{ bip = 1 }\n"
	os.WriteFile(path, []byte(bad), 0o644)
	_, err = MergeDaemonJSONFile(path, o, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not JSON") {
		t.Errorf("not JSON: %v", err)
	}
	if after, _ := os.ReadFile(path); string(after) != bad {
		t.Errorf("file not JSON was changed to %q", after)
	}

	// A missing drop-in is an error, not a silent pass.
	if _, err := MergeDaemonJSONFile(path, o, []string{filepath.Join(dir, "nope.conf")}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing drop-in: %v", err)
	}
}

func TestInDaemonJSON(t *testing.T) {
	o := Options{BIP: "100.96.1.1/24", MTU: 1450, OmitIPMasq: true}
	for data, want := range map[string]string{
		`{"mtu": 1400, "ip-masq": false, "debug": true}`: "mtu",
		`{"bip": "", "mtu": 0}`:                          "bip,mtu",
		`{"default-address-pools": [{"base": "x"}]}`:     "",
		"  \n":                                  "",
		"\xef\xbb\xbf{\"bip\": \"1.2.3.1/24\"}": "bip",
	} {
		got, err := InDaemonJSON([]byte(data), o)
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("%s: %q, %v; want %q", data, got, err, want)
		}
	}
	if _, err := InDaemonJSON([]byte(`{"bip":`), o); err == nil {
		t.Error("truncated JSON accepted")
	}
}
