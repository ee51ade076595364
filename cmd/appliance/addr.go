package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Every flag that takes an address reads it with parseAddr, so one form
// works everywhere: IP:PORT, IPv6 in brackets ([2001:db8::1]:5004), the
// port a number. A flag that reaches another machine (gen --to, status
// --addr) also takes HOST:PORT, a name looked up when the command runs; a
// flag that binds (--listen) takes an IP, as status.listen in the config
// does. A scheme in front, as the config writes outputs (udp://) or a
// browser shows the page (http://), is dropped where it fits the flag.

// addrFlag says how one flag takes an address.
type addrFlag struct {
	name    string   // the flag, without dashes
	host    bool     // a host name is accepted (the flag reaches another machine)
	schemes []string // prefixes that are dropped, e.g. "udp://"
	port    uint16   // the port of the examples in its errors
}

var (
	runListen     = addrFlag{name: "listen", port: 8080}
	witnessListen = addrFlag{name: "listen", port: 7400}
	probeListen   = addrFlag{name: "listen", schemes: []string{"udp://"}, port: 6004}
	genTo         = addrFlag{name: "to", host: true, schemes: []string{"udp://"}, port: 5004}
	statusAddr    = addrFlag{name: "addr", host: true, schemes: []string{"http://", "https://"}, port: 8080}
)

// hostPort is a parsed address: ip is valid when it was written as one,
// otherwise host is a name to look up.
type hostPort struct {
	scheme string // as written, e.g. "https://"; "" if none
	ip     netip.Addr
	host   string
	port   uint16
}

// String is the address as IP:PORT or HOST:PORT.
func (h hostPort) String() string {
	if h.ip.IsValid() {
		return netip.AddrPortFrom(h.ip, h.port).String()
	}
	return net.JoinHostPort(h.host, strconv.Itoa(int(h.port)))
}

// form is how the flag is written, for messages.
func (f addrFlag) form() string {
	if f.host {
		return "IP:PORT or HOST:PORT"
	}
	return "IP:PORT"
}

// example is a right way to write the flag, with port if the value had one.
func (f addrFlag) example(port uint16) string {
	if port == 0 {
		port = f.port
	}
	if f.host {
		return fmt.Sprintf("127.0.0.1:%d or unit-a.example.net:%d", port, port)
	}
	return fmt.Sprintf("127.0.0.1:%d (0.0.0.0:%d for every address)", port, port)
}

// parseAddr reads the flag's value s. Its errors say what was wrong and show
// the right form; they are command-line errors (exit code 2).
func parseAddr(f addrFlag, s string) (hostPort, error) {
	bad := func(port uint16, format string, args ...any) (hostPort, error) {
		return hostPort{}, fmt.Errorf("--%s %q: %s; write it as %s, e.g. %s", f.name, s, fmt.Sprintf(format, args...), f.form(), f.example(port))
	}
	if s == "" {
		return hostPort{}, fmt.Errorf("--%s is required: give %s, e.g. %s", f.name, f.form(), f.example(0))
	}
	var h hostPort
	rest := s
	if i := strings.Index(rest, "://"); i >= 0 {
		scheme := strings.ToLower(rest[:i+3])
		ok := false
		for _, sc := range f.schemes {
			ok = ok || scheme == sc
		}
		if !ok {
			return bad(0, "%s does not go here", rest[:i+3])
		}
		h.scheme, rest = scheme, rest[i+3:]
		if h.scheme == "http://" || h.scheme == "https://" {
			rest = strings.TrimSuffix(rest, "/")
		}
	}
	if rest != strings.TrimSpace(rest) || strings.ContainsAny(rest, "/?#@") {
		return bad(0, "not %s", f.form())
	}
	host, portText, err := net.SplitHostPort(rest)
	if err != nil {
		switch {
		case strings.Count(rest, ":") > 1 && !strings.HasPrefix(rest, "["):
			return bad(0, "an IPv6 address goes in brackets, as [2001:db8::1]:%d", f.port)
		case !strings.Contains(rest, ":"), strings.HasPrefix(rest, "[") && strings.HasSuffix(rest, "]"):
			return bad(0, "no port")
		}
		return bad(0, "not %s", f.form())
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return bad(0, "the port is a number from 1 to 65535")
	}
	h.port = uint16(port)
	switch ip, err := netip.ParseAddr(host); {
	case err == nil:
		h.ip = ip
	case host == "":
		return bad(h.port, "no IP before the port")
	case !f.host:
		return bad(h.port, "--%s takes an IP address, not a name", f.name)
	case !validHostName(host):
		return bad(h.port, "%q is neither an IP address nor a host name", host)
	default:
		h.host = host
	}
	return h, nil
}

// validHostName says whether s can be a DNS name: labels of letters,
// digits and hyphens, not starting or ending with a hyphen.
func validHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// resolve turns a parsed address into an IP, looking a name up. Of a name's
// addresses it takes the first IPv4 one, as units listen on IPv4 unless
// told otherwise (localhost is then 127.0.0.1, not ::1).
func resolve(ctx context.Context, f addrFlag, h hostPort) (netip.AddrPort, error) {
	if h.ip.IsValid() {
		return netip.AddrPortFrom(h.ip, h.port), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h.host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("--%s %s: cannot look up %q (%v); check the name, or give the IP address", f.name, h, h.host, err)
	}
	pick := ips[0].Unmap()
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			pick = ip.Unmap()
			break
		}
	}
	return netip.AddrPortFrom(pick, h.port), nil
}
