"""The plan lifecycle: reminders before a plan ends, and automatic renewal."""
