package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// flagSet is a command's flags, with where its usage goes: asked for
// (--help, -h) to stdout and exit 0, after a mistake to stderr and exit 2.
type flagSet struct {
	*flag.FlagSet
	cmd            command
	stdout, stderr io.Writer
}

func newFlags(name string, stdout, stderr io.Writer) *flagSet {
	c, ok := lookup(name)
	if !ok {
		c = command{name: name}
	}
	fs := &flagSet{FlagSet: flag.NewFlagSet("appliance "+name, flag.ContinueOnError), cmd: c, stdout: stdout, stderr: stderr}
	fs.SetOutput(stderr)
	// parseWithArgs prints the usage itself, to the right place.
	fs.Usage = func() {}
	return fs
}

// parseFlags reads args, which must be flags only. It returns errHelp when
// the usage was asked for and printed, errUsage after a mistake.
func parseFlags(fs *flagSet, args []string) error {
	if err := fs.parseWithArgs(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fs.usageError("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// parseWithArgs reads the flags and leaves what follows them in fs.Args().
func (fs *flagSet) parseWithArgs(args []string) error {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.usage(fs.stdout)
		return errHelp
	default:
		// The flag package has printed what was wrong.
		fs.shortUsage(fs.stderr)
		return errUsage
	}
}

// usageError prints what is wrong with the command line and how it is
// written, and returns errUsage (exit code 2).
func (fs *flagSet) usageError(format string, args ...any) error {
	fmt.Fprintf(fs.stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.shortUsage(fs.stderr)
	return errUsage
}

func (fs *flagSet) synopsis() string {
	s := fs.Name()
	if fs.cmd.synopsis != "" {
		s += " " + fs.cmd.synopsis
	}
	return s
}

func (fs *flagSet) shortUsage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s\n(%s --help explains every flag)\n", fs.synopsis(), fs.Name())
}

// usage is the whole of it: the synopsis, what the command does and every
// flag, written --name as the README writes them.
func (fs *flagSet) usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n", fs.synopsis())
	if fs.cmd.what != "" {
		fmt.Fprintf(w, "\n%s%s.\n", strings.ToUpper(fs.cmd.what[:1]), fs.cmd.what[1:])
	}
	printFlags(w, fs.FlagSet)
}

func printFlags(w io.Writer, fs *flag.FlagSet) {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nFlags:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fs.VisitAll(func(f *flag.Flag) {
		name, text := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if name != "" {
			left += " " + name
		}
		if shownDefault(f.DefValue) {
			text += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(tw, "  %s\t%s\n", left, text)
	})
	_ = tw.Flush()
}

// shownDefault leaves out the defaults that mean "not set".
func shownDefault(v string) bool {
	switch v {
	case "", "false", "0", "-1":
		return false
	}
	return true
}
