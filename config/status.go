package config

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// MaxTokens is the most API tokens a unit takes: one per operator, team or
// script that acts on it, with room to spare.
const MaxTokens = 64

var tokenName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// CheckTokenName checks the name of an API token, as status.tokens and
// `appliance token hash --name` take it.
func CheckTokenName(name string) error {
	if !tokenName.MatchString(name) {
		return fmt.Errorf("%q: use 1 to 63 lowercase letters, digits, dashes and underscores, such as noc", name)
	}
	return nil
}

// TokenLine is the entry of status.tokens for a token whose SHA-256 is sum,
// as `appliance token hash` prints it to paste into the config.
func TokenLine(name string, sum [32]byte) string {
	return fmt.Sprintf(`{name: %s, sha256: "%x"}`, name, sum)
}

const hashHint = "the 64 hex digits `appliance token hash` prints, in quotes (the hash, never the token itself)"

// emptyHash is the SHA-256 of no bytes: the hash of a token left empty.
var emptyHash = sha256.Sum256(nil)

func (d *decoder) tokens(n *yaml.Node, st *Status) {
	const path = "status: tokens"
	if !d.kind(n, path, yaml.SequenceNode, "a list of {name: NAME, sha256: \"HASH\"}") {
		return
	}
	if len(n.Content) > MaxTokens {
		d.at(n, path, "%d tokens; at most %d: give people who work together one token", len(n.Content), MaxTokens)
		return
	}
	names := map[string]int{}
	sums := map[[32]byte]int{}
	for i, tn := range n.Content {
		p := fmt.Sprintf("status: tokens[%d]", i)
		t := Token{}
		nameOK, sumOK := false, false
		var nameNode, sumNode *yaml.Node
		if !d.fields(tn, p, map[string]func(*yaml.Node){
			"name": func(v *yaml.Node) {
				nameNode = v
				if !d.str(v, join(p, "name"), &t.Name) {
					return
				}
				if err := CheckTokenName(t.Name); err != nil {
					d.at(v, join(p, "name"), "%v", err)
					return
				}
				nameOK = true
			},
			"sha256": func(v *yaml.Node) {
				sumNode = v
				sumOK = d.tokenHash(v, join(p, "sha256"), &t.SHA256)
			},
		}, "name", "sha256") {
			continue
		}
		if nameOK {
			if j, dup := names[t.Name]; dup {
				d.at(nameNode, join(p, "name"), "%q is already the name of tokens[%d]; names must be unique, as the log tells who acted by them", t.Name, j)
				nameOK = false
			} else {
				names[t.Name] = i
			}
		}
		if sumOK {
			if j, dup := sums[t.SHA256]; dup {
				d.at(sumNode, join(p, "sha256"), "the same token as tokens[%d]; give each its own (`appliance token hash --generate`)", j)
				sumOK = false
			} else {
				sums[t.SHA256] = i
			}
		}
		if nameOK && sumOK {
			st.Tokens = append(st.Tokens, t)
		}
	}
}

// tokenHash reads a token's SHA-256. Problems never quote the value: a
// token pasted here by mistake must not end up in a log.
func (d *decoder) tokenHash(n *yaml.Node, path string, dst *[32]byte) bool {
	if !d.kind(n, path, yaml.ScalarNode, "a single value") {
		return false
	}
	if n.Tag != "!!str" {
		d.at(n, path, "must be %s", hashHint)
		return false
	}
	b, err := hex.DecodeString(n.Value)
	if err != nil || len(b) != sha256.Size {
		d.at(n, path, "must be %s", hashHint)
		return false
	}
	copy(dst[:], b)
	if *dst == emptyHash {
		d.at(n, path, "is the hash of an empty token; make one with `appliance token hash --generate`")
		return false
	}
	return true
}

func (d *decoder) tls(key, n *yaml.Node, st *Status) {
	t := &st.TLS
	if !d.fields(n, "status: tls", map[string]func(*yaml.Node){
		"cert": func(v *yaml.Node) { d.str(v, "status: tls: cert", &t.Cert) },
		"key":  func(v *yaml.Node) { d.str(v, "status: tls: key", &t.Key) },
	}) {
		return
	}
	switch {
	case t.Cert != "" && t.Key == "":
		d.at(key, "status: tls", "cert is set but key is not; give the certificate's private key as status.tls.key, or neither for plain HTTP")
	case t.Cert == "" && t.Key != "":
		d.at(key, "status: tls", "key is set but cert is not; give the certificate as status.tls.cert, or neither for plain HTTP")
	case t.Cert != "":
		d.tlsNode = key
		return
	}
	*t = TLS{}
}

// readTLS loads the API's certificate and key as the unit will, so that
// check refuses what run would.
func (d *decoder) readTLS(c *Config) {
	t := c.Status.TLS
	if d.tlsNode == nil || t.Cert == "" {
		return
	}
	bad := false
	for _, f := range []struct{ setting, path string }{{"status.tls.cert", t.Cert}, {"status.tls.key", t.Key}} {
		if err := readable(f.path); err != nil {
			d.at(d.tlsNode, "status: tls", "%s: %v", f.setting, err)
			bad = true
		}
	}
	if bad {
		return
	}
	if err := loadTLS(t); err != nil {
		d.at(d.tlsNode, "status: tls", "%v", err)
	}
}

// loadTLS loads the certificate and key of t, as the API serves them.
func loadTLS(t TLS) error {
	_, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return fmt.Errorf("status.tls.cert %s and status.tls.key %s do not load as a certificate and its key: %s; give PEM files, the key matching the certificate",
			t.Cert, t.Key, strings.TrimPrefix(err.Error(), "tls: "))
	}
	return nil
}

// readable says why the file at path cannot be read, if it cannot.
func readable(path string) error {
	f, err := openNonblocking(path)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("%s does not exist; give the path of a PEM file", path)
		case errors.Is(err, os.ErrPermission):
			return fmt.Errorf("%s cannot be read (permission denied); it must be readable by the user the unit runs as: chown appliance %s", path, path)
		}
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is %s, not a regular file; give the path of the PEM file itself", path, describeMode(fi.Mode()))
	}
	return nil
}
