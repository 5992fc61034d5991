using CsCheck;
using Herald.RabbitMQ.Transport;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// The ring of running delivery tags the ack batcher keeps (issue 9: it replaced a SortedSet, which allocated a node per
/// delivery), checked against a SortedSet on generated runs of adds and removes, including the rare out-of-order add and
/// growing past its first capacity. No broker needed.
/// </summary>
public sealed class DeliveryTagSetTests
{
    [Fact]
    public void AddsAndRemoves_AlwaysAgreeWithASortedSet()
    {
        // An operation: add the next tag (mostly), add an older one, or remove one picked by index from those present.
        var operations = Gen.Select(Gen.Int[0, 9], Gen.Int[0, 1000]).Array[1, 400];
        operations.Sample(ops =>
        {
            var set = new DeliveryTagSet();
            var expected = new SortedSet<ulong>();
            ulong next = 1;
            foreach (var (kind, pick) in ops)
            {
                if (kind < 5)
                {
                    set.Add(next);
                    expected.Add(next);
                    next++;
                }
                else if (kind == 5)
                {
                    var older = (ulong)(pick % (int)next) + 1;
                    set.Add(older);
                    expected.Add(older);
                }
                else if (expected.Count > 0)
                {
                    var tag = expected.ElementAt(pick % expected.Count);
                    Assert.True(set.Remove(tag));
                    expected.Remove(tag);
                    Assert.False(set.Remove(tag));
                }
                else
                {
                    Assert.False(set.Remove((ulong)pick));
                }

                Assert.Equal(expected.Count, set.Count);
                if (expected.Count > 0)
                {
                    Assert.Equal(expected.Min, set.Min);
                }
            }

            foreach (var tag in expected.Reverse())
            {
                Assert.True(set.Remove(tag));
            }

            Assert.Equal(0, set.Count);
        });
    }

    [Fact]
    public void Clear_EmptiesIt_AndItTakesTagsAfresh()
    {
        var set = new DeliveryTagSet();
        for (ulong tag = 1; tag <= 40; tag++)
        {
            set.Add(tag);
        }

        Assert.True(set.Remove(7));
        set.Clear();
        Assert.Equal(0, set.Count);
        Assert.False(set.Remove(8));

        // A new registration numbers its deliveries from 1 again.
        set.Add(1);
        set.Add(2);
        Assert.Equal(1UL, set.Min);
        Assert.True(set.Remove(1));
        Assert.Equal(2UL, set.Min);
    }
}
