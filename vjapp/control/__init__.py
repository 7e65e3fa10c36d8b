"""Control surfaces and external clocks: MIDI in, MIDI learn, MIDI clock.

* :mod:`vjapp.control.midi_map` - which CC or note drives which control or action (pure logic,
  saved per controller as JSON).
* :mod:`vjapp.control.midi_clock` - MIDI clock (24 ppqn, start/stop/continue) as a tempo source.
* :mod:`vjapp.control.midi` - the port: listing, opening by name or index, a listener thread that
  reopens a port that vanished. The only module here that imports mido (lazily: the ``midi``
  extra is optional).
"""
