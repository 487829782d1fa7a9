"""What every other part of alignflow builds on: errors, the home folder, interrupts, servers, hashing."""
