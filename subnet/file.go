package subnet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultSubnetFile is where flanneld writes its subnet file.
const DefaultSubnetFile = "/run/flannel/subnet.env"

// WriteSubnetFile writes flannel's subnet file, byte for byte:
//
//	FLANNEL_NETWORK=100.96.0.0/16
//	FLANNEL_SUBNET=100.96.1.1/24
//	FLANNEL_MTU=1472
//	FLANNEL_IPMASQ=false
//
// FLANNEL_SUBNET is the subnet's first host address, ready to be docker's
// --bip. The file appears atomically (temporary file in the same directory,
// fsync, rename), so a reader sees the old content or the new, never a part;
// missing directories are created.
func WriteSubnetFile(path string, network, subnet netip.Prefix, mtu int, ipMasq bool) error {
	if !network.IsValid() || !subnet.IsValid() || subnet.Bits() >= subnet.Addr().BitLen() {
		return fmt.Errorf("subnet file %s: invalid network %s or subnet %s", path, network, subnet)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", network.Masked())
	fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", netip.PrefixFrom(subnet.Masked().Addr().Next(), subnet.Bits()))
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", mtu)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%t\n", ipMasq)
	if err := WriteFileAtomic(path, b.Bytes(), 0o644, -1, -1); err != nil {
		return fmt.Errorf("subnet file: %w", err)
	}
	return nil
}

// WriteFileAtomic replaces the file at path with data atomically: a
// temporary file in the same directory with mode perm (and owner uid:gid,
// unless -1), fsync, rename, fsync of the directory. A reader sees the old
// content or the new, never a part; missing directories are created.
func WriteFileAtomic(path string, data []byte, perm os.FileMode, uid, gid int) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if uid >= 0 && uid != os.Getuid() || gid >= 0 && gid != os.Getgid() {
		if err := f.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadSubnetFile returns the subnet named by FLANNEL_SUBNET in a subnet file
// (flanneld's or overlayd's), host bits cleared: the previous subnet a
// restarted host asks for first. A missing file gives an error matching
// fs.ErrNotExist. Lines may use the dotenv forms flannel accepts: comments,
// "export ", quoted values.
func ReadSubnetFile(path string) (netip.Prefix, error) {
	vars, err := readEnvFile(path)
	if err != nil {
		return netip.Prefix{}, err
	}
	val, ok := vars["FLANNEL_SUBNET"]
	if !ok {
		return netip.Prefix{}, fmt.Errorf("subnet file %s: %w", path, errNoSubnetLine)
	}
	p, err := netip.ParsePrefix(val)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet file %s: FLANNEL_SUBNET=%s is not an IPv4 CIDR", path, val)
	}
	return p.Masked(), nil
}

var errNoSubnetLine = errors.New("no FLANNEL_SUBNET line")

// SubnetEnv is what a subnet file says, for the programs that configure
// a bridge from it (docker-opts, flannel's CNI plugin).
type SubnetEnv struct {
	Network netip.Prefix // FLANNEL_NETWORK
	Subnet  netip.Prefix // FLANNEL_SUBNET as written: the bridge address and the lease's length
	MTU     int          // FLANNEL_MTU
	IPMasq  bool         // FLANNEL_IPMASQ: the daemon masquerades traffic leaving the network
}

// ReadSubnetEnv reads a whole subnet file. FLANNEL_SUBNET and FLANNEL_MTU
// are required; FLANNEL_NETWORK and FLANNEL_IPMASQ may be absent. A missing
// file gives an error matching fs.ErrNotExist.
func ReadSubnetEnv(path string) (SubnetEnv, error) {
	vars, err := readEnvFile(path)
	if err != nil {
		return SubnetEnv{}, err
	}
	var env SubnetEnv
	bad := func(key string) error {
		return fmt.Errorf("subnet file %s: %s=%q is not valid", path, key, vars[key])
	}
	if v, ok := vars["FLANNEL_SUBNET"]; !ok {
		return SubnetEnv{}, fmt.Errorf("subnet file %s: %w", path, errNoSubnetLine)
	} else if env.Subnet, err = netip.ParsePrefix(v); err != nil || !env.Subnet.Addr().Is4() {
		return SubnetEnv{}, bad("FLANNEL_SUBNET")
	}
	if v, ok := vars["FLANNEL_MTU"]; !ok {
		return SubnetEnv{}, fmt.Errorf("subnet file %s: no FLANNEL_MTU line", path)
	} else if env.MTU, err = strconv.Atoi(v); err != nil || env.MTU < 68 {
		return SubnetEnv{}, bad("FLANNEL_MTU")
	}
	if v, ok := vars["FLANNEL_NETWORK"]; ok {
		if env.Network, err = netip.ParsePrefix(v); err != nil {
			return SubnetEnv{}, bad("FLANNEL_NETWORK")
		}
	}
	if v, ok := vars["FLANNEL_IPMASQ"]; ok {
		if env.IPMasq, err = strconv.ParseBool(v); err != nil {
			return SubnetEnv{}, bad("FLANNEL_IPMASQ")
		}
	}
	return env, nil
}

// readEnvFile reads KEY=value lines in the dotenv forms flannel accepts:
// comments, "export ", quoted values. The first of repeated keys wins.
func readEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("subnet file: %w", err)
	}
	vars := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		val = strings.TrimSpace(val)
		if uq, err := strconv.Unquote(val); err == nil {
			val = uq
		} else if len(val) >= 2 && val[0] == '\'' && val[len(val)-1] == '\'' {
			val = val[1 : len(val)-1]
		}
		if _, dup := vars[key]; !dup {
			vars[key] = val
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("subnet file %s: %w", path, err)
	}
	return vars, nil
}
