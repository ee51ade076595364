// Command mkbundle makes the update key and bundles at build time
// (image/build.sh runs it; docs/image.md, "Update and rollback"):
//
//	mkbundle key KEY.pem PUB.pem      a new ed25519 key (PKCS #8) and its public half
//	mkbundle pub KEY.pem PUB.pem      the public half of KEY.pem
//	mkbundle bundle KEY.pem VERSION ROOTFS VMLINUZ INITRD OUT
//
// The private key is the build's secret: keep it out of the repository.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"

	"appliance/update"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkbundle:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: mkbundle key|pub|bundle ...")
	}
	switch {
	case args[0] == "key" && len(args) == 3:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		priv, pub, err := update.PEMKeys(key)
		if err != nil {
			return err
		}
		if err := os.WriteFile(args[1], priv, 0o600); err != nil {
			return err
		}
		return os.WriteFile(args[2], pub, 0o644)
	case args[0] == "pub" && len(args) == 3:
		key, err := update.ReadPrivateKey(args[1])
		if err != nil {
			return err
		}
		_, pub, err := update.PEMKeys(key)
		if err != nil {
			return err
		}
		return os.WriteFile(args[2], pub, 0o644)
	case args[0] == "bundle" && len(args) == 7:
		key, err := update.ReadPrivateKey(args[1])
		if err != nil {
			return err
		}
		out, err := os.Create(args[6] + ".tmp")
		if err != nil {
			return err
		}
		err = update.WriteBundle(out, args[2], []string{"rootfs", "vmlinuz", "initrd"},
			map[string]string{"rootfs": args[3], "vmlinuz": args[4], "initrd": args[5]}, key)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(args[6] + ".tmp")
			return err
		}
		return os.Rename(args[6]+".tmp", args[6])
	}
	return fmt.Errorf("usage: mkbundle key KEY PUB | pub KEY PUB | bundle KEY VERSION ROOTFS VMLINUZ INITRD OUT")
}
