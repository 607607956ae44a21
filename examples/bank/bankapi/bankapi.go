// Package bankapi wires the bank example into the handlers: its commands,
// its projections, its read routes and its error codes. The functions and
// the local runner call Register; a domain of your own needs a file like
// this one.
package bankapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/google/uuid"

	"github.com/eventcore-go/eventcore/eventlog"
	"github.com/eventcore-go/eventcore/examples/bank"
	"github.com/eventcore-go/eventcore/executor"
	"github.com/eventcore-go/eventcore/handler"
)

// Register adds the bank's commands, projections, queries and errors.
func Register(reg *handler.Registry) {
	codec := bank.NewCodec()
	handler.Command(reg, bank.CommandOpenAccount, codec, decode[bank.OpenAccount])
	handler.Command(reg, bank.CommandDeposit, codec, decode[bank.Deposit])
	handler.Command(reg, bank.CommandWithdraw, codec, decode[bank.Withdraw])
	handler.Command(reg, bank.CommandTransfer, codec, func(body []byte) (executor.Command[bank.State, bank.Event], error) {
		var t bank.Transfer
		if err := handler.DecodeStrict(body, &t); err != nil {
			return nil, err
		}
		if err := t.Validate(); err != nil {
			return nil, err
		}
		t.ID = uuid.Must(uuid.NewV7()).String()
		return t, nil
	})
	reg.Projection(bank.Balances{})
	reg.Projection(bank.History{})
	reg.Query("/accounts/{id}", bank.ProjectionBalances, account)
	reg.Query("/accounts/{id}/history", bank.ProjectionHistory, history)
	reg.Errors(mapError)
}

// decode reads a command body with the strict JSON rules and validates it.
func decode[C bank.Command](body []byte) (executor.Command[bank.State, bank.Event], error) {
	var c C
	if err := handler.DecodeStrict(body, &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// mapError answers input errors 400 and business rules 422 with their code.
func mapError(err error) *handler.Error {
	var input *bank.InputError
	var rule *bank.RuleError
	switch {
	case errors.As(err, &input):
		return handler.InvalidRequest("%s", input.Error())
	case errors.As(err, &rule):
		return handler.Errorf(http.StatusUnprocessableEntity, string(rule.Code), "%s", rule.Message)
	case errors.Is(err, bank.ErrNoAccount):
		return handler.Errorf(http.StatusNotFound, string(bank.CodeAccountNotFound), "account not found")
	}
	return nil
}

func accountID(path map[string]string) (string, error) {
	id := path["id"]
	if err := bank.ValidateAccountID("account", id); err != nil {
		return "", handler.InvalidRequest("%s", err.Error())
	}
	return id, nil
}

func account(ctx context.Context, env handler.QueryEnv, path map[string]string, _ map[string][]string) (any, error) {
	id, err := accountID(path)
	if err != nil {
		return nil, err
	}
	b, err := bank.ReadBalance(ctx, env.Projections.DB(), id)
	if err != nil {
		return nil, notFound(err)
	}
	return b, nil
}

func history(ctx context.Context, env handler.QueryEnv, path map[string]string, query map[string][]string) (any, error) {
	id, err := accountID(path)
	if err != nil {
		return nil, err
	}
	after, limit := uint64(0), uint64(handler.DefaultReadLimit)
	if v, ok := query["after"]; ok {
		if after, err = strconv.ParseUint(v[0], 10, 63); err != nil || len(v) != 1 {
			return nil, handler.InvalidRequest("after must be a non-negative integer")
		}
	}
	if v, ok := query["limit"]; ok {
		if limit, err = strconv.ParseUint(v[0], 10, 63); err != nil || len(v) != 1 || limit < 1 || limit > handler.MaxReadLimit {
			return nil, handler.InvalidRequest("limit must be from 1 to %d", handler.MaxReadLimit)
		}
	}
	items, err := bank.ReadHistory(ctx, env.Projections.DB(), id, eventlog.Position(after), int(limit))
	if err != nil {
		return nil, notFound(err)
	}
	return map[string]any{"account": id, "history": items}, nil
}

func notFound(err error) error {
	if errors.Is(err, bank.ErrNoAccount) {
		return handler.Errorf(http.StatusNotFound, string(bank.CodeAccountNotFound), "account not found")
	}
	return err
}
