"""``robot_sim_node``: the embedded simulator (reality proxy or exact) as a ROS 2 robot.

``core`` (``RobotSim``, ``RobotSimConfig``) steps a world and produces the robot's messages, ``messages`` builds
them with the recorder's own builders, ``runner`` paces a run (real time, a real-time factor or lockstep) and
``node`` is the thin rclpy file. Everything but ``node`` runs without ROS.
"""
