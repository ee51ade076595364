package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"appliance/config"
	"appliance/control"
)

// runStdin runs the appliance binary with stdin and returns its output and
// exit code.
func runStdin(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errorsAs(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// TestTokenHash: `appliance token hash` prints the line to paste under
// status.tokens, which the config takes; --generate prints a token once
// with its line; --help prints the usage and exits 0; the token is never
// taken from the command line.
func TestTokenHash(t *testing.T) {
	const token = "Zq3vT9pLr8sKx2mNw7yBc4hJd6fGa1eU"
	out, errOut, code := runStdin(t, token+"\n", "token", "hash", "--name", "noc")
	want := fmt.Sprintf("- {name: noc, sha256: \"%x\"}\n", sha256.Sum256([]byte(token)))
	if code != 0 || out != want || strings.Contains(errOut, token) {
		t.Fatalf("token hash: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
	c, err := config.Parse("t.yaml", []byte("version: 1\nunit: {name: u1}\nstatus:\n  tokens:\n    "+out))
	if err != nil || len(c.Status.Tokens) != 1 || c.Status.Tokens[0].SHA256 != sha256.Sum256([]byte(token)) {
		t.Errorf("the printed line does not configure the token: %v", err)
	}

	out, _, code = runStdin(t, "", "token", "hash", "--generate", "--name", "ci_bot")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "token: ") {
		t.Fatalf("--generate: exit %d, %q", code, out)
	}
	gen := strings.TrimPrefix(lines[0], "token: ")
	if len(gen) < 40 || lines[1] != "- "+config.TokenLine("ci_bot", sha256.Sum256([]byte(gen))) {
		t.Errorf("--generate printed %q", out)
	}
	if again, _, _ := runStdin(t, "", "token", "hash", "--generate"); strings.Contains(again, gen) {
		t.Error("--generate made the same token twice")
	}

	for _, args := range [][]string{{"token", "hash", "--help"}, {"token", "--help"}, {"token", "hash", "-h"}} {
		out, _, code := runStdin(t, "", args...)
		if code != 0 || !strings.Contains(out, "Usage: appliance token hash") || !strings.Contains(out, "-generate") {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"", []string{"token", "hash"}, 1, "no token on standard input"},
		{"short\n", []string{"token", "hash"}, 1, "too easy to guess"},
		{"with a space in it, long enough\n", []string{"token", "hash"}, 1, "printable ASCII"},
		{"", []string{"token", "hash", token}, 2, "never from the command line"},
		{"", []string{"token", "hash", "--name", "Bad Name"}, 2, "lowercase letters"},
		{"", []string{"token", "hash", "--bogus"}, 2, "flag provided but not defined"},
		{"", []string{"token"}, 2, "appliance token hash"},
		{"", []string{"token", "list"}, 2, "appliance token hash"},
	} {
		out, errOut, code := runStdin(t, tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d saying %q", tc.args, code, out, errOut, tc.code, tc.want)
		}
		if strings.Contains(errOut, token) {
			t.Errorf("%v: the token is echoed: %s", tc.args, errOut)
		}
	}
}

// TestAPIActionsOnAUnit: a running unit takes actions over HTTP only with a
// configured token, the socket and the API restart a stream alike (that
// stream only), and the token never reaches the unit's log.
func TestAPIActionsOnAUnit(t *testing.T) {
	skipShort(t)
	const token = "e2e-token-5f1c9a7d3b2e4c6a8f0d1e2b"
	ports := freeUDPPorts(t, 4)
	extra := fmt.Sprintf("status:\n  tokens:\n    - %s\n", config.TokenLine("noc", sha256.Sum256([]byte(token))))
	u := startUnit(t, streamsConfig(1, ports[:2], ports[2:], nil, extra))
	pid := u.stream("s0").WorkerPID

	post := func(path, auth string) (int, control.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", u.api+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r control.Response
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("POST %s: %v: %s", path, err, b)
		}
		return resp.StatusCode, r, string(b)
	}
	for _, auth := range []string{"", "not-the-token-0123456789"} {
		if code, r, body := post("/api/v1/streams/s0/restart", auth); code != 401 || r.Error == "" {
			t.Errorf("a restart with token %q: %d %s", auth, code, body)
		}
	}
	if s := u.stream("s0"); s.Restarts != 0 {
		t.Fatalf("a refused restart restarted the stream: %+v", s)
	}

	code, r, body := post("/api/v1/streams/s0/restart", token)
	if code != 200 || r.Restart == nil || r.Restart.Stream != "s0" || r.Restart.Restarts != 1 || r.Restart.WorkerPID != pid {
		t.Fatalf("a restart over HTTP: %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	viaSocket, err := control.Call(ctx, u.socket, control.Request{Op: control.OpRestart, Stream: "s0"})
	if err != nil || !viaSocket.OK || viaSocket.Restart.Restarts != 2 || viaSocket.Restart.WorkerPID != pid {
		t.Fatalf("a restart over the socket: %+v %v", viaSocket, err)
	}
	if out, errOut, code := runStdin(t, "", "restart", "--socket", u.socket, "s0"); code != 0 || !strings.Contains(out, "s0: restarted on worker-0") {
		t.Errorf("appliance restart: exit %d, %q %q", code, out, errOut)
	}
	if s0, s1 := u.stream("s0"), u.stream("s1"); s0.Restarts != 3 || s1.Restarts != 0 || s1.WorkerPID != pid || s0.WorkerPID != pid {
		t.Errorf("after three restarts of s0: s0 %d restarts (pid %d), s1 %d (pid %d); want only s0, on worker %d", s0.Restarts, s0.WorkerPID, s1.Restarts, s1.WorkerPID, pid)
	}

	for _, tc := range []struct {
		path string
		code int
		want string
	}{
		{"/api/v1/streams/nope/restart", 404, "no such stream: nope"},
		{"/api/v1/streams/s0/handover", 409, "not paired"},
		{"/api/v1/config/reload", 200, ""},
	} {
		code, r, body := post(tc.path, token)
		if code != tc.code || !strings.Contains(r.Error, tc.want) {
			t.Errorf("POST %s: %d %s, want %d", tc.path, code, body, tc.code)
		}
	}
	if logs := u.logs.String(); strings.Contains(logs, token) || !strings.Contains(logs, "by=noc") {
		t.Errorf("the log holds the token, or does not name who acted:\n%s", logs)
	}

	// The unit's events name each action, who asked for it and how it went.
	var byAPI, bySocket, failed bool
	for _, e := range u.mustReport().Events {
		if e.Source != "action" {
			continue
		}
		switch {
		case e.Kind == "restart" && e.Stream == "s0" && !e.Failed && strings.HasPrefix(e.By, "noc ("):
			byAPI = true
		case e.Kind == "restart" && e.Stream == "s0" && !e.Failed && strings.HasPrefix(e.By, "control socket, uid "):
			bySocket = true
		case e.Kind == "restart" && e.Stream == "nope" && e.Failed && strings.Contains(e.Message, "no such stream"):
			failed = true
		}
		if strings.Contains(e.By+e.Message, token) {
			t.Errorf("an event holds the token: %+v", e)
		}
	}
	if !byAPI || !bySocket || !failed {
		t.Errorf("action events: by the API %v, by the socket %v, the failed one %v; events: %+v", byAPI, bySocket, failed, u.mustReport().Events)
	}
}
