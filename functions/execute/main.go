// Command execute is the execute Lambda function (binary bootstrap): it runs
// the bank example's commands from API Gateway HTTP API requests
// (POST /commands/{name}) and direct invocations. It is the single writer of
// the event log.
package main

import (
	"fmt"
	"os"

	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
)

func main() {
	pick := func(a *app.App) app.InvokeFunc { return a.Execute.Invoke }
	if err := app.RunLambda(app.RoleExecute, bankapi.Register, pick); err != nil {
		fmt.Fprintln(os.Stderr, "execute: "+err.Error())
		os.Exit(1)
	}
}
