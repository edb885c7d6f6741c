"""Objects from class maps and probabilities, arrays in and arrays out: ``methods`` (cc,
distance, seeded, and the options a model file may store), ``watershed`` (per component and
the distance split), ``seeded`` (interiors seed a watershed over the foreground), ``stitch``
(local ids merged across block faces), ``object_table`` (per-object measurements and their CSV).
"""
