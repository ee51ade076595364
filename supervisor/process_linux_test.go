package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"appliance/internal/testutil"
)

const helperEnv = "SUPERVISOR_TEST_HELPER"

// TestHelperParent is not a test of its own: run by TestChildDiesWithParent
// as a separate process, it starts a child through Process, prints the
// child's PID and waits to be killed.
func TestHelperParent(t *testing.T) {
	if os.Getenv(helperEnv) != "parent" {
		return
	}
	p := &Process{Name: "child", Command: shell("exec sleep 120"), Logger: quiet(),
		Attach: func(ctx context.Context, pr *Proc) error {
			fmt.Println(pr.PID)
			<-ctx.Done()
			return nil
		}}
	_ = p.Serve(context.Background())
	os.Exit(0)
}

// A child does not outlive its parent, even one killed with no chance to
// stop it: it holds sockets the restarted unit must bind.
func TestChildDiesWithParent(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^TestHelperParent$")
	parent.Env = append(os.Environ(), helperEnv+"=parent")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Wait()
	defer parent.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the child's PID from the parent: %v", err)
	}
	child, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || child <= 0 {
		t.Fatalf("the parent printed %q, want the child's PID", line)
	}
	// The child leads its own process group, so the group is the child.
	if liveInGroup(child) != 1 {
		t.Fatalf("child %d is not running", child)
	}
	defer func() {
		if t.Failed() && liveInGroup(child) > 0 {
			syscall.Kill(-child, syscall.SIGKILL)
		}
	}()
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the child to die with its parent", func() bool { return liveInGroup(child) == 0 })
}
