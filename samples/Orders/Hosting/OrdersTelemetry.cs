using System.Diagnostics;
using Herald.Sagas;
using Orders.Fulfilment;

namespace Orders;

/// <summary>The sample's own spans (saga runs and steps), beside Herald's "Herald" source and the ASP.NET Core ones.</summary>
public static class OrdersTelemetry
{
    public const string SourceName = "Orders";

    public static ActivitySource Source { get; } = new(SourceName);

    public static Activity? StartStep(SagaStepContext<FulfilmentData> step)
    {
        var activity = Source.StartActivity(step.IsCompensation ? $"compensate {step.StepName}" : $"step {step.StepName}");
        activity?.SetTag("herald.saga", step.SagaName);
        activity?.SetTag("herald.saga.id", step.SagaId);
        activity?.SetTag("herald.correlation_id", step.Data.CorrelationId);
        activity?.SetTag("herald.saga.attempt", step.Attempt);
        return activity;
    }
}
