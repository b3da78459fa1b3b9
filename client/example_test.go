package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/envd-dev/envd/client"
)

// A host agent after booting or restoring a VM: wait for envd, initialise it,
// run a command, put a file in.
func Example_hostAgent() {
	ctx := context.Background()
	c, err := client.New(exampleURL) // client.DefaultURL inside the sandbox's network
	if err != nil {
		panic(err)
	}
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := c.WaitHealthy(wait, 100*time.Millisecond); err != nil {
		panic(err)
	}
	if err := c.Init(ctx, client.InitOptions{EnvVars: map[string]string{"GREETING": "hello"}}); err != nil {
		panic(err)
	}
	res, err := c.Run(ctx, client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "echo $GREETING; exit 3"}})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s exit %d\n", strings.TrimSpace(string(res.Stdout)), res.Code)
	dir, _ := os.MkdirTemp("", "envd-example")
	defer os.RemoveAll(dir)
	info, err := c.Upload(ctx, filepath.Join(dir, "conf/app.toml"), strings.NewReader("port = 8080\n"))
	if err != nil {
		panic(err)
	}
	fmt.Println(info.Name, info.Type)
	// Output:
	// hello exit 3
	// app.toml file
}

// Errors match a kind with errors.Is, whether envd answered with a Connect
// code or an HTTP status.
func Example_errors() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	_, err := c.Stat(ctx, "/no/such/file")
	fmt.Println(errors.Is(err, client.ErrNotFound))
	_, err = c.Download(ctx, "/no/such/file", io.Discard)
	fmt.Println(errors.Is(err, client.ErrNotFound))
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status)
	}
	// Output:
	// true
	// true
	// 404
}

func ExampleClient_Start() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	p, err := c.Start(ctx, client.Cmd{Cmd: "tr", Args: []string{"a-z", "A-Z"}})
	if err != nil {
		panic(err)
	}
	in, err := p.Stdin(ctx)
	if err != nil {
		panic(err)
	}
	io.WriteString(in, "streamed ")
	io.WriteString(in, "input\n")
	in.Close() // ends the stream and closes the process's stdin
	exit, err := p.Wait(os.Stdout, os.Stderr)
	if err != nil {
		panic(err)
	}
	fmt.Println("exit", exit.Code)
	// Output:
	// STREAMED INPUT
	// exit 0
}

func ExampleClient_Upload() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	dir, _ := os.MkdirTemp("", "envd-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "data.bin")
	data := bytes.Repeat([]byte("0123456789"), 100_000)
	var last int64
	_, err := c.Upload(ctx, path, bytes.NewReader(data), client.Gzip(), client.Length(int64(len(data))),
		client.OnProgress(func(done, total int64) { last = done }))
	if err != nil {
		panic(err)
	}
	fmt.Println("sent", last)
	var part bytes.Buffer
	n, err := c.Download(ctx, path, &part, client.Range(10, 5))
	if err != nil {
		panic(err)
	}
	fmt.Println(n, part.String())
	// Output:
	// sent 1000000
	// 5 01234
}

func ExampleClient_Watch() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	dir, _ := os.MkdirTemp("", "envd-example")
	defer os.RemoveAll(dir)
	w, err := c.Watch(ctx, dir, client.WatchOptions{Recursive: true})
	if err != nil {
		panic(err)
	}
	defer w.Close()
	if _, err := c.MakeDir(ctx, filepath.Join(dir, "sub")); err != nil {
		panic(err)
	}
	ev := <-w.Events()
	fmt.Println(ev.Op, ev.Name)
	// Output:
	// create sub
}

func ExampleClient_SignedURL() {
	c, _ := client.New("http://127.0.0.1:49983", client.WithToken("secret"))
	u := c.SignedURL("/home/user/report.pdf", client.Read, "user", time.Unix(1_900_000_000, 0))
	fmt.Println(u)
	// Output:
	// http://127.0.0.1:49983/files?path=%2Fhome%2Fuser%2Freport.pdf&signature=v1_%2Fm%2BV6PdvR5yHwoxxMuHGPbFy4LY6ncSx8plU%2F8r3C2o&signature_expiration=1900000000&username=user
}

func ExampleClient_Run() {
	c, _ := client.New(exampleURL)
	res, err := c.Run(context.Background(), client.Cmd{
		Cmd:  "/bin/sh",
		Args: []string{"-c", "echo $WHO; echo oops >&2; kill -TERM $$"},
		Env:  map[string]string{"WHO": "world"},
	})
	if err != nil {
		panic(err)
	}
	fmt.Printf("stdout %q stderr %q shell code %d\n", res.Stdout, res.Stderr, res.ShellCode())
	// Output:
	// stdout "world\n" stderr "oops\n" shell code 143
}

// A process keeps running when the stream that started it goes away; Connect
// attaches to it again by tag.
func ExampleClient_Connect() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	started, cancel := context.WithCancel(ctx)
	p, err := c.Start(started, client.Cmd{Cmd: "cat", Tag: "reattach-me"})
	if err != nil {
		panic(err)
	}
	cancel() // detach
	p.Close()
	q, err := c.Connect(ctx, client.Tag("reattach-me"))
	if err != nil {
		panic(err)
	}
	if err := q.SendInput(ctx, []byte("still here\n")); err != nil {
		panic(err)
	}
	if err := q.CloseStdin(ctx); err != nil {
		panic(err)
	}
	exit, err := q.Wait(os.Stdout, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(q.PID == p.PID, exit.Code)
	// Output:
	// still here
	// true 0
}

func ExampleClient_ListDir() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	dir, _ := os.MkdirTemp("", "envd-example")
	defer os.RemoveAll(dir)
	c.Upload(ctx, filepath.Join(dir, "a/b/c.txt"), strings.NewReader("c"))
	c.Upload(ctx, filepath.Join(dir, "top.txt"), strings.NewReader("top"))
	entries, err := c.ListDir(ctx, dir, 3)
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		rel, _ := filepath.Rel(dir, e.Path)
		fmt.Println(e.Type, rel)
	}
	// Output:
	// dir a
	// dir a/b
	// file a/b/c.txt
	// file top.txt
}

// The output log outlives the stream that started the process: read it
// afterwards, from any offset, and see exactly what was lost if anything was.
func ExampleClient_ReadOutput() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	res, err := c.Run(ctx, client.Cmd{Cmd: "/bin/sh", Args: []string{"-c", "echo first; echo second; exit 2"}})
	if err != nil {
		panic(err)
	}
	r, err := c.ReadOutput(ctx, client.PID(res.PID), client.ReadOptions{Stream: client.Stdout, Offset: 6})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	for {
		ev, err := r.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			panic(err)
		}
		switch {
		case ev.Gap != nil:
			fmt.Printf("lost %d bytes at %d\n", ev.Gap.Dropped, ev.Gap.Offset)
		case ev.Exit != nil:
			fmt.Println("exit", ev.Exit.Code, "after", ev.Exit.StdoutBytes, "bytes of stdout")
		default:
			fmt.Printf("%d: %q\n", ev.Offset, ev.Data)
		}
	}
	// Output:
	// 6: "second\n"
	// exit 2 after 13 bytes of stdout
}

// WaitExit tells how a process ended, whoever started it and whether or not
// anyone is attached to it.
func ExampleClient_WaitExit() {
	ctx := context.Background()
	c, _ := client.New(exampleURL)
	p, err := c.Start(ctx, client.Cmd{Cmd: "sleep", Args: []string{"1000"}, Tag: "batch-job"})
	if err != nil {
		panic(err)
	}
	p.Close() // detach: the process keeps running
	if err := c.Signal(ctx, client.Tag("batch-job"), client.SIGTERM); err != nil {
		panic(err)
	}
	rep, err := c.WaitExit(ctx, client.Tag("batch-job"))
	if err != nil {
		panic(err)
	}
	fmt.Println(rep.Tag, rep.Signal, rep.ShellCode())
	// Output:
	// batch-job SIGTERM 143
}

// WaitForPort waits as long as the call's deadline allows.
func ExampleClient_WaitForPort() {
	c, _ := client.New(exampleURL)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.WaitForPort(ctx, 1) // nothing listens on port 1 here
	fmt.Println(errors.Is(err, client.ErrDeadlineExceeded))
	// Output:
	// true
}
