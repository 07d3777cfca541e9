package subnet

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestWriteSubnetFileExactBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env") // directories made too
	if err := WriteSubnetFile(path, pfx("100.96.0.0/16"), pfx("100.96.1.0/24"), 1472, false); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const want = "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
	if string(got) != want {
		t.Errorf("subnet file:\n%q\nwant\n%q", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the subnet file (no temporary left)", len(entries))
	}

	prev, err := ReadSubnetFile(path)
	if err != nil || prev != pfx("100.96.1.0/24") {
		t.Errorf("ReadSubnetFile = %v, %v; want 100.96.1.0/24", prev, err)
	}
}

// A reader racing the writer sees one complete version or the other.
func TestWriteSubnetFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	a := "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
	b := "FLANNEL_NETWORK=100.96.0.0/16\nFLANNEL_SUBNET=100.96.200.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if err := WriteSubnetFile(path, pfx("100.96.0.0/16"), pfx("100.96.1.0/24"), 1472, false); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for i := range 200 {
			var err error
			if i%2 == 0 {
				err = WriteSubnetFile(path, pfx("100.96.0.0/16"), pfx("100.96.200.0/24"), 1450, true)
			} else {
				err = WriteSubnetFile(path, pfx("100.96.0.0/16"), pfx("100.96.1.0/24"), 1472, false)
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	})
	for reads := 0; ; reads++ {
		select {
		case <-done:
			wg.Wait()
			return
		default:
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read %d: %v", reads, err)
		}
		if s := string(got); s != a && s != b {
			t.Fatalf("read %d saw a partial file: %q", reads, s)
		}
	}
}

func TestReadSubnetFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		content string
		want    string
	}{
		{"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\nFLANNEL_IPV6_SUBNET=fd00::1/64\n", "10.244.3.0/24"},
		{"# written by hand\nexport FLANNEL_SUBNET=\"100.96.9.1/24\"\n", "100.96.9.0/24"},
		{"FLANNEL_SUBNET='100.96.9.129/25'", "100.96.9.128/25"},
	}
	for i, tt := range tests {
		path := filepath.Join(dir, "f"+string(rune('a'+i)))
		if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadSubnetFile(path)
		if err != nil || got != pfx(tt.want) {
			t.Errorf("ReadSubnetFile(%q) = %v, %v; want %s", tt.content, got, err, tt.want)
		}
	}

	if _, err := ReadSubnetFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err %v, want fs.ErrNotExist", err)
	}
	for _, bad := range []string{"FLANNEL_NETWORK=10.244.0.0/16\n", "FLANNEL_SUBNET=fd00::1/64\n", "FLANNEL_SUBNET=nonsense\n"} {
		path := filepath.Join(dir, "bad")
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if p, err := ReadSubnetFile(path); err == nil {
			t.Errorf("ReadSubnetFile(%q) = %v, want an error", bad, p)
		}
	}
}

func TestReadSubnetEnv(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if err := WriteSubnetFile(path, pfx("100.96.0.0/16"), pfx("100.96.1.0/24"), 1450, true); err != nil {
		t.Fatal(err)
	}
	env, err := ReadSubnetEnv(path)
	want := SubnetEnv{Network: pfx("100.96.0.0/16"), Subnet: pfx("100.96.1.1/24"), MTU: 1450, IPMasq: true}
	if err != nil || env != want {
		t.Errorf("ReadSubnetEnv = %+v, %v; want %+v", env, err, want)
	}
	for name, content := range map[string]string{
		"no mtu":   "FLANNEL_SUBNET=100.96.1.1/24\n",
		"bad mtu":  "FLANNEL_SUBNET=100.96.1.1/24\nFLANNEL_MTU=x\n",
		"bad masq": "FLANNEL_SUBNET=100.96.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=maybe\n",
		"v6":       "FLANNEL_SUBNET=fd00::1/64\nFLANNEL_MTU=1450\n",
	} {
		os.WriteFile(path, []byte(content), 0o644)
		if _, err := ReadSubnetEnv(path); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ReadSubnetEnv(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
