package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"appliance/config"
)

// tokenHelp is what `appliance token --help` adds to the synopsis.
const tokenHelp = `
The line goes under status.tokens in the config: the token's SHA-256, never
the token itself. The token is read from the first line of standard input,
or, with --generate, made here and printed once: keep it, the unit cannot
show it again.

  appliance token hash --name noc --generate
  echo "$TOKEN" | appliance token hash --name ci

Then restart the unit. Scripts act with the header "Authorization: Bearer
TOKEN"; people log in with the token on the status page.
`

// minTokenLen is the shortest token taken: a short one could be guessed
// from its hash, or at the API despite its rate limits.
const minTokenLen = 16

// cmdTokenCommand is cmdToken as the command table calls it.
func cmdTokenCommand(_ context.Context, args []string, stdout, stderr io.Writer) error {
	return cmdToken(args, os.Stdin, stdout, stderr)
}

func cmdToken(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("token", stdout, stderr)
	name := fs.String("name", "noc", "who uses the token, as the log names them")
	generate := fs.Bool("generate", false, "make a random token and print it with its line")
	sub := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	if err := fs.parseWithArgs(args); err != nil {
		if errors.Is(err, errHelp) {
			fmt.Fprint(stdout, tokenHelp)
		}
		return err
	}
	switch {
	case isHelp(sub):
		fs.usage(stdout)
		fmt.Fprint(stdout, tokenHelp)
		return errHelp
	case sub != "hash":
		return fs.usageError("say what to do: appliance token hash")
	}
	if fs.NArg() > 0 {
		return fs.usageError("unexpected argument; the token is read from standard input, never from the command line (where ps and the shell history would show it)")
	}
	if err := config.CheckTokenName(*name); err != nil {
		return fs.usageError("--name %v", err)
	}

	var token string
	if *generate {
		var b [32]byte
		_, _ = rand.Read(b[:]) // never fails (crypto/rand panics rather)
		token = base64.RawURLEncoding.EncodeToString(b[:])
	} else {
		if f, ok := stdin.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				fmt.Fprintln(stderr, "Type the token and press Enter (or use --generate):")
			}
		}
		t, err := readToken(stdin)
		if err != nil {
			fmt.Fprintf(stderr, "appliance token hash: %v\n", err)
			return errReported
		}
		token = t
	}
	line := "- " + config.TokenLine(*name, sha256.Sum256([]byte(token)))
	if *generate {
		fmt.Fprintf(stdout, "token: %s\n", token)
	}
	fmt.Fprintln(stdout, line)
	fmt.Fprintln(stderr, "Add the line under status: tokens: in the config, then restart the unit.")
	return nil
}

// readToken reads the token from the first line of r.
func readToken(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the token: %w", err)
	}
	token := strings.TrimSpace(line)
	switch {
	case token == "":
		return "", errors.New("no token on standard input; pipe one in, or use --generate")
	case len(token) < minTokenLen:
		return "", fmt.Errorf("a token of %d characters is too easy to guess; use at least %d, or --generate", len(token), minTokenLen)
	case len(token) > 1024:
		return "", errors.New("the token is longer than 1024 characters; use a shorter one, or --generate")
	}
	for _, c := range token {
		if c <= ' ' || c > '~' {
			return "", errors.New("the token has a space or a character outside printable ASCII; it must fit in an HTTP header: use --generate")
		}
	}
	return token, nil
}

func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}
