using System.Security.Cryptography;
using System.Text;
using Herald.EventSourcing;
using Herald.Messages;
using Microsoft.Extensions.Hosting;

namespace Orders.Domain;

/// <summary>
/// Appends the catalog's customers and products as events at start, before the server takes requests, under ids derived
/// from their keys: appending them again (a restart, a second instance) is an idempotent no-op of the store.
/// </summary>
public sealed class CatalogSeeder(IEventStore store, IMessageSerializer serializer, MessageTypeRegistry types, TimeProvider time) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var customer in Catalog.Customers)
        {
            await SeedAsync($"customer-{customer.Id}", new CustomerRegistered(customer.Id, customer.Name), cancellationToken);
        }

        foreach (var product in Catalog.Products)
        {
            await SeedAsync($"product-{product.Sku}", new ProductListed(product.Sku, product.Name, product.Price), cancellationToken);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private async Task SeedAsync(string stream, object @event, CancellationToken cancellationToken)
    {
        var info = types.GetByType(@event.GetType());
        var envelope = new Envelope
        {
            MessageId = new Guid(SHA256.HashData(Encoding.UTF8.GetBytes("orders-sample/" + stream)).AsSpan(0, 16)),
            MessageType = info.Name,
            SchemaVersion = info.Version,
            Time = time.GetUtcNow(),
            PartitionKey = stream,
            ContentType = serializer.ContentType,
            Body = serializer.Serialize(@event, info.ClrType),
        };
        try
        {
            await store.AppendAsync(stream, ExpectedVersion.NoStream, [envelope], cancellationToken);
        }
        catch (ConcurrencyException)
        {
            // Seeded before (with another time stamp, or an older catalog): the stream exists, which is all that matters.
        }
    }
}
