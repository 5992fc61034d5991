namespace Herald.RabbitMQ.Transport;

/// <summary>
/// The delivery tags of one channel still running, in order, for <see cref="AckBatcher"/>: a sorted ring of numbers. Tags
/// arrive in increasing order (appended at the end) and mostly finish oldest first (taken from the front), so both are
/// O(1); one finishing out of order shifts the shorter side. Unlike a SortedSet it allocates nothing per tag, and it holds
/// at most the prefetch window. Not thread-safe: the batcher's lock guards it.
/// </summary>
internal sealed class DeliveryTagSet
{
    private ulong[] _tags = new ulong[16];
    private int _head;
    private int _count;

    public int Count => _count;

    /// <summary>The oldest tag; only when <see cref="Count"/> is not zero.</summary>
    public ulong Min => _tags[_head];

    public void Add(ulong tag)
    {
        if (_count == _tags.Length)
        {
            Grow();
        }

        var mask = _tags.Length - 1;
        if (_count == 0 || tag > _tags[(_head + _count - 1) & mask])
        {
            _tags[(_head + _count) & mask] = tag;
            _count++;
            return;
        }

        // Out of order (never from the broker, which numbers deliveries upwards): insert in place, keeping the ring sorted.
        var index = Search(tag);
        if (index >= 0)
        {
            return;
        }

        index = ~index;
        for (var i = _count; i > index; i--)
        {
            _tags[(_head + i) & mask] = _tags[(_head + i - 1) & mask];
        }

        _tags[(_head + index) & mask] = tag;
        _count++;
    }

    /// <summary>Removes the tag; false when it is not in the set.</summary>
    public bool Remove(ulong tag)
    {
        var index = Search(tag);
        if (index < 0)
        {
            return false;
        }

        var mask = _tags.Length - 1;
        if (index < _count / 2)
        {
            // Nearer the front: move the older tags up by one.
            for (var i = index; i > 0; i--)
            {
                _tags[(_head + i) & mask] = _tags[(_head + i - 1) & mask];
            }

            _head = (_head + 1) & mask;
        }
        else
        {
            for (var i = index; i < _count - 1; i++)
            {
                _tags[(_head + i) & mask] = _tags[(_head + i + 1) & mask];
            }
        }

        _count--;
        return true;
    }

    public void Clear()
    {
        _head = 0;
        _count = 0;
    }

    /// <summary>The tag's position from the front, or the bitwise complement of where it would go.</summary>
    private int Search(ulong tag)
    {
        var mask = _tags.Length - 1;

        // The oldest tag is the usual one to finish, so it is checked before the binary search.
        if (_count > 0 && _tags[_head] == tag)
        {
            return 0;
        }

        var low = 0;
        var high = _count - 1;
        while (low <= high)
        {
            var middle = low + ((high - low) >> 1);
            var value = _tags[(_head + middle) & mask];
            if (value == tag)
            {
                return middle;
            }

            if (value < tag)
            {
                low = middle + 1;
            }
            else
            {
                high = middle - 1;
            }
        }

        return ~low;
    }

    private void Grow()
    {
        var grown = new ulong[_tags.Length * 2];
        var mask = _tags.Length - 1;
        for (var i = 0; i < _count; i++)
        {
            grown[i] = _tags[(_head + i) & mask];
        }

        _tags = grown;
        _head = 0;
    }
}
