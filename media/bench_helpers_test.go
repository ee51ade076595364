package media

import (
	"bytes"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func signalNotify(ch chan os.Signal) { signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT) }

func pipeStart(cmd *exec.Cmd) (*bytes.Buffer, error) {
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	return &out, cmd.Start()
}

func trimNL(b []byte) []byte { return bytes.TrimSpace(b) }
