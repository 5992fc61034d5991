using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Herald.Persistence;
using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Orders.Api;
using Orders.ReadModel;

namespace Orders.Tests;

/// <summary>
/// <c>GET /orders/{id}</c> of an order placed but not yet projected waits <see cref="OrderEndpoints.ReadModelWait"/> for the
/// read model, then answers 503 with <c>Retry-After</c>; the projection is held at the order's document, and the wait's
/// clock is a fake one the test advances.
/// </summary>
public sealed class ReadModelLagTests : IAsyncLifetime
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "orders-tests-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly ReadModelGate _gate = new();
    private readonly WaitClock _clock = new();
    private ServiceInstance _service = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        _service = await ServiceInstance.StartAsync(
            services =>
            {
                _gate.Install(services);
                services.AddKeyedSingleton<TimeProvider>(OrderEndpoints.ReadModelWaitClock, _clock);
            },
            "--Herald:Profile", "embedded", "--Herald:Sqlite", Path.Combine(_directory, "orders.db"));
    }

    public async Task DisposeAsync()
    {
        _gate.ReleaseAll();
        await _service.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task ReadOfAnOrderTheReadModelHasNotReached_Answers503WithRetryAfter_OnceTheWaitRunsOut_AndTheOrderIsReadAfterwards()
    {
        var held = _gate.HoldNextOrderDocument();
        using var placed = await _service.Http.PostAsJsonAsync("/orders", new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } });
        Assert.Equal(HttpStatusCode.Accepted, placed.StatusCode);
        var id = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
        await held.Reached.WaitAsync(Eventually.DefaultTimeout);

        var timerCreated = _clock.NextWaitTimer();
        var read = _service.Http.GetAsync($"/orders/{id}");
        await timerCreated.WaitAsync(Eventually.DefaultTimeout);

        // Short of the wait, the read still waits (it can only have answered early by a bug, never by chance).
        _clock.Advance(OrderEndpoints.ReadModelWait - TimeSpan.FromMilliseconds(1));
        Assert.False(read.IsCompleted, "the read answered before its wait ran out");

        _clock.Advance(TimeSpan.FromMilliseconds(1));
        using var response = await read.WaitAsync(Eventually.DefaultTimeout);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("1", response.Headers.RetryAfter?.ToString());
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using (var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()))
        {
            Assert.Equal(503, problem.RootElement.GetProperty("status").GetInt32());
            Assert.Contains(id.ToString(), problem.RootElement.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        // The projection goes on: the order is read as placed.
        held.Release();
        var order = await _service.WaitForOrderAsync(id, o => o.Id == id.ToString(), "is in the read model");
        Assert.Equal("Ada Lovelace", order.CustomerName);
    }

    /// <summary>A fake clock that signals when the read's wait timer (<see cref="OrderEndpoints.ReadModelWait"/>) is created.</summary>
    private sealed class WaitClock : FakeTimeProvider
    {
        private TaskCompletionSource _created = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task NextWaitTimer()
        {
            _created = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _created.Task;
        }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            if (dueTime == OrderEndpoints.ReadModelWait)
            {
                _created.TrySetResult();
            }

            return timer;
        }
    }

    /// <summary>Holds the projection where it writes the next order's document, so the read model stays behind that order.</summary>
    private sealed class ReadModelGate
    {
        private readonly object _lock = new();
        private LedgerGate.Hold? _next;
        private readonly List<LedgerGate.Hold> _all = [];

        public LedgerGate.Hold HoldNextOrderDocument()
        {
            var hold = new LedgerGate.Hold();
            lock (_lock)
            {
                _next = hold;
                _all.Add(hold);
            }

            return hold;
        }

        public void ReleaseAll()
        {
            lock (_lock)
            {
                _all.ForEach(h => h.Release());
            }
        }

        public void Install(IServiceCollection services)
        {
            var registered = services.Last(d => d.ServiceType == typeof(IReadModelStore));
            services.Remove(registered);
            services.AddSingleton<IReadModelStore>(sp => new GatedStore(
                (IReadModelStore)(registered.ImplementationInstance ?? registered.ImplementationFactory!(sp)),
                this));
        }

        private Task WaitAsync(string table)
        {
            if (table != OrderProjection.Orders.Name)
            {
                return Task.CompletedTask;
            }

            LedgerGate.Hold? hold;
            lock (_lock)
            {
                hold = _next;
                _next = null;
            }

            return hold?.ReachedAsync() ?? Task.CompletedTask;
        }

        private sealed class GatedStore(IReadModelStore inner, ReadModelGate gate) : IReadModelStore
        {
            public ValueTask<string?> GetAsync(string table, string id, CancellationToken cancellationToken = default) => inner.GetAsync(table, id, cancellationToken);

            public ValueTask<string?> GetAsync(string table, int generation, string id, CancellationToken cancellationToken = default) => inner.GetAsync(table, generation, id, cancellationToken);

            public ValueTask<IReadOnlyList<ReadModelDocument>> QueryAsync(string table, ReadModelQuery query, CancellationToken cancellationToken = default) => inner.QueryAsync(table, query, cancellationToken);

            public async ValueTask UpdateAsync(string table, int generation, string id, Func<string?, string?> change, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
            {
                await gate.WaitAsync(table);
                await inner.UpdateAsync(table, generation, id, change, unitOfWork, cancellationToken);
            }

            public ValueTask<int> GetActiveGenerationAsync(string table, CancellationToken cancellationToken = default) => inner.GetActiveGenerationAsync(table, cancellationToken);

            public ValueTask ResetGenerationAsync(string table, int generation, CancellationToken cancellationToken = default) => inner.ResetGenerationAsync(table, generation, cancellationToken);

            public ValueTask ActivateGenerationAsync(string table, int generation, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) => inner.ActivateGenerationAsync(table, generation, unitOfWork, cancellationToken);

            public ValueTask DropGenerationAsync(string table, int generation, CancellationToken cancellationToken = default) => inner.DropGenerationAsync(table, generation, cancellationToken);
        }
    }
}
