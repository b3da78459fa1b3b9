package main

import (
	"context"
	"fmt"
	"time"

	"github.com/envd-dev/envd/client"
)

func (a *app) cmdInit(ctx context.Context, args []string) error {
	fl := newFlags("init")
	token := fl.String("token", "", "access token envd requires from now on")
	user := fl.String("user", "", "default user")
	workdir := fl.String("workdir", "", "default working directory")
	env := kv{}
	fl.Var(env, "env", "K=V default environment variable (repeatable)")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 0 {
		return usagef("takes no arguments")
	}
	o := client.InitOptions{AccessToken: *token, DefaultUser: *user, DefaultWorkdir: *workdir, Timestamp: time.Now()}
	if len(env) > 0 {
		o.EnvVars = env
	}
	return a.c.Init(ctx, o)
}

func (a *app) cmdHealth(ctx context.Context, args []string) error {
	fl := newFlags("health")
	wait := fl.Duration("wait", 0, "poll until envd is healthy, at most this long")
	if err := parse(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 0 {
		return usagef("takes no arguments")
	}
	var v string
	var err error
	if *wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, *wait)
		defer cancel()
		v, err = a.c.WaitHealthy(wctx, 100*time.Millisecond)
	} else {
		v, err = a.c.Health(ctx)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, v)
	return nil
}
