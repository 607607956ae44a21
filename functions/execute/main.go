// Command execute is the execute Lambda function (binary bootstrap): it runs
// the bank example's commands from API Gateway HTTP API requests
// (POST /commands/{name}) and direct invocations. It is the single writer of
// the event log.
package main

import (
	"github.com/eventcore-go/eventcore/app"
	"github.com/eventcore-go/eventcore/examples/bank/bankapi"
)

func main() {
	app.StartLambda("execute", app.RoleExecute, bankapi.Register, func(a *app.App) app.InvokeFunc { return a.Execute.Invoke })
}
